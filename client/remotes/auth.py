"""Registry authorisation: the `WWW-Authenticate` challenge a registry
answers 401 with, and what satisfies it (containerd's docker authorizer).

`Basic` sends the user's credentials. `Bearer` asks the challenge's realm
(a token server) for a token covering the scope the request needs
(`repository:<path>:pull[,push]`), with the user's credentials as Basic
auth when there are any, anonymously otherwise; the token is kept per host
and scope until the registry refuses it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Callable

import httpx

from pycontainerd.pkg import errdefs

Credentials = Callable[[str], tuple[str, str]]


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in one WWW-Authenticate value: `Scheme k="v", k=v`
    (quoted values may hold commas and escaped quotes)."""
    out: list[Challenge] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " ,":
            i += 1
        start = i
        while i < n and header[i] not in " ,":
            i += 1
        if start == i:
            break
        current = Challenge(header[start:i].lower())
        out.append(current)
        while i < n:
            while i < n and header[i] in " ,":
                i += 1
            key_start = i
            while i < n and header[i] not in "=, ":
                i += 1
            if i >= n or header[i] != "=":
                i = key_start  # the next word is a new scheme, not a parameter
                break
            key = header[key_start:i].lower()
            i += 1
            if i < n and header[i] == '"':
                i += 1
                value = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(header[i])
                    i += 1
                i += 1
                current.params[key] = "".join(value)
            else:
                value_start = i
                while i < n and header[i] not in ", ":
                    i += 1
                current.params[key] = header[value_start:i]
    return out


def basic_header(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class Authorizer:
    """Answers challenges for every host one registry client talks to."""

    def __init__(self, credentials: Credentials | None = None):
        self.credentials = credentials
        # (host, scope) -> Authorization header value
        self._headers: dict[tuple[str, str], str] = {}

    def header(self, host: str, scope: str) -> str | None:
        return self._headers.get((host, scope)) or self._headers.get((host, ""))

    def _creds(self, host: str) -> tuple[str, str]:
        return self.credentials(host) if self.credentials else ("", "")

    def answer(self, client: httpx.Client, host: str, scope: str, response: httpx.Response) -> None:
        """Prepare the header that answers `response`'s challenge; raise
        when it cannot be answered or was already answered and refused."""
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        tried = self.header(host, scope)
        for c in challenges:
            if c.scheme == "bearer":
                if tried and tried.startswith("Bearer ") and "error" in c.params:
                    raise errdefs.PermissionDenied(
                        f"server message: {c.params['error']}: authorization failed")
                self._headers[(host, scope)] = "Bearer " + self._fetch_token(client, host, scope, c)
                return
            if c.scheme == "basic":
                user, secret = self._creds(host)
                if not user and not secret:
                    raise errdefs.PermissionDenied(
                        f"{host} asks for Basic authorization and no credentials were given")
                header = basic_header(user, secret)
                if tried == header:
                    raise errdefs.PermissionDenied(
                        f"{host} refused the credentials of user {errdefs.go_quote(errdefs.cut(user, 64))}: "
                        "authorization failed")
                self._headers[(host, "")] = header
                return
        raise errdefs.NotImplementedErr("failed to find supported auth scheme")

    def _fetch_token(self, client: httpx.Client, host: str, scope: str, c: Challenge) -> str:
        realm = c.params.get("realm", "")
        if not realm:
            raise errdefs.InvalidArgument("no realm specified for token auth challenge")
        params = {}
        if c.params.get("service"):
            params["service"] = c.params["service"]
        scopes = [s for s in (scope, c.params.get("scope", "")) if s]
        user, secret = self._creds(host)
        headers = {"Authorization": basic_header(user, secret)} if user or secret else {}
        query = list(params.items()) + [("scope", s) for s in dict.fromkeys(scopes)]
        try:
            resp = client.get(realm, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise errdefs.Unavailable(f"failed to fetch token from {errdefs.cut(realm)}: {type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            raise errdefs.PermissionDenied(
                f"failed to fetch token from {errdefs.cut(realm)}: {resp.status_code} {resp.reason_phrase}: "
                "authorization failed")
        if resp.status_code != 200:
            raise errdefs.Unknown(f"failed to fetch token: unexpected status {resp.status_code} {resp.reason_phrase}")
        try:
            body = resp.json()
        except ValueError:
            raise errdefs.Unknown("unable to decode token response") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise errdefs.Unknown("authorization server did not include a token in the response")
        return token
