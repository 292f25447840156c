"""Registry authorisation: the `WWW-Authenticate` challenge a registry
answers 401 with, and what satisfies it (containerd's docker authorizer).

`Basic` sends the user's credentials. `Bearer` asks the challenge's realm
(a token server) for a token covering the scope the request needs
(`repository:<path>:pull[,push]`): with the user's credentials by
containerd's OAuth POST (a GET with Basic auth where the server has no
POST), anonymously otherwise; the token is kept per host and scope, and
reused by every request of that scope, until the registry refuses it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Callable

import httpx

from pycontainerd.pkg import errdefs

Credentials = Callable[[str], tuple[str, str]]
OAUTH_CLIENT_ID = "containerd-client"  # what containerd's client calls itself to token servers


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
        """A token for `scope` and the challenge's own scope (containerd's
        doBearerAuth): with credentials, containerd's OAuth POST to the realm
        (`grant_type=password`, or `refresh_token` for a secret without a
        user), falling back to a GET with Basic auth where the token server
        refuses the POST (404, 400, 401, or 405 with a user); without, an
        anonymous GET."""
        realm = c.params.get("realm", "")
        if not realm:
            raise errdefs.InvalidArgument("no realm specified for token auth challenge")
        service = c.params.get("service", "")
        # containerd's GetTokenScopes: both lists, sorted, each once
        scopes = sorted({s for s in (*scope.split(), *c.params.get("scope", "").split()) if s})
        user, secret = self._creds(host)
        if secret:
            form = {"scope": " ".join(scopes), "service": service, "client_id": OAUTH_CLIENT_ID}
            if user:
                form.update(grant_type="password", username=user, password=secret)
            else:
                form.update(grant_type="refresh_token", refresh_token=secret)
            if not scopes:
                del form["scope"]
            resp = self._token_request(client, "POST", realm, data=form,
                                       headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
            if resp.status_code in (404, 401, 400) or (resp.status_code == 405 and user):
                resp = self._token_request(client, "GET", realm, params=self._query(service, scopes),
                                           headers={"Authorization": basic_header(user, secret)})
                return _token_of(resp, "failed to fetch oauth token", ("access_token", "token"))
            return _token_of(resp, "failed to fetch oauth token", ("access_token",))
        resp = self._token_request(client, "GET", realm, params=self._query(service, scopes))
        return _token_of(resp, "failed to fetch anonymous token", ("access_token", "token"))

    @staticmethod
    def _query(service: str, scopes: list[str]) -> list[tuple[str, str]]:
        return ([("service", service)] if service else []) + [("scope", s) for s in scopes]

    @staticmethod
    def _token_request(client: httpx.Client, method: str, realm: str, **kwargs) -> httpx.Response:
        try:
            return client.request(method, realm, **kwargs)
        except httpx.HTTPError as exc:
            raise errdefs.Unavailable(
                f"failed to fetch token from {errdefs.cut(realm)}: {type(exc).__name__}") from None


def _token_of(resp: httpx.Response, what: str, fields: tuple[str, ...]) -> str:
    """The token a token server answered, or the error worded as containerd's."""
    if resp.status_code < 200 or resp.status_code >= 400:
        status = f"{resp.status_code} {resp.reason_phrase}".strip()
        kind = errdefs.PermissionDenied if resp.status_code in (401, 403) else errdefs.Unknown
        raise kind(f"{what}: unexpected status: {status}")
    try:
        body = resp.json()
    except ValueError:
        raise errdefs.Unknown(f"{what}: unable to decode token response") from None
    token = next((body.get(f) for f in fields if isinstance(body, dict) and body.get(f)), None)
    if not isinstance(token, str) or not token:
        raise errdefs.Unknown(f"{what}: authorization server did not include a token in the response")
    return token
