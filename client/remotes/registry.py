"""A registry client (OCI distribution spec), shaped after containerd's
remotes/docker resolver, fetcher and pusher.

- `resolve(ref)`: HEAD on the manifest with the Accept list containerd
  sends; a GET (bounded) when the HEAD gives no digest. Mirrors from the
  hosts directory are tried first, each only for what it may do.
- `fetch(ref, desc)`: the blob or manifest streamed in chunks, its size and
  digest checked as the bytes pass (nothing is buffered whole); a dropped
  connection resumes with `Range` where the registry honours it.
- `push_blob(ref, desc, opener)`: skipped when the registry has it (HEAD),
  mounted from another repository when asked and allowed, else uploaded
  (POST, then one PUT with the digest, or PATCH chunks and a final PUT).
- `push_manifest(ref, desc, data)`: PUT under the tag (or digest).

Requests that meet a 5xx or a dropped connection are retried with
exponential backoff; a refused connection fails at once. A 401 is
answered once through the `Authorizer`.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator
from urllib.parse import urljoin

import httpx
import httpcore

# httpcore reads a response body 64 KiB at a time, and every piece then
# passes through h11's and httpx's Python layers (~0.1 ms each): for a
# 139 MiB image that was a third of the client's CPU. Bigger reads take
# whatever the socket holds at once (recv returns what is there; it never
# waits for the whole size).
READ_SIZE = 1 << 20
if getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
    httpcore.HTTP11Connection.READ_NUM_BYTES = READ_SIZE

from pycontainerd.pkg import digest as _digest
from pycontainerd.pkg import errdefs, reference
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.oci.descriptor import Descriptor

from .auth import Authorizer, Credentials
from .hosts import PULL, PUSH, RESOLVE, RegistryHost, configure_hosts

CHUNK = 1 << 20
MAX_MANIFEST = 4 << 20  # containerd refuses bigger manifests on resolve
RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass
class Options:
    """How to reach registries: ctr's `--plain-http`, `--hosts-dir`,
    `--skip-verify`, a CA file, `--user`."""

    plain_http: bool = False
    hosts_dir: str = ""
    skip_verify: bool = False
    ca_file: str = ""
    credentials: Credentials | None = None
    retries: int = 4
    backoff: float = 0.1
    timeout: float = 30.0
    chunk_size: int = 0  # >0: push in PATCH chunks of this size, else one PUT


def static_credentials(user: str, secret: str) -> Credentials:
    """The same user for every host (ctr's `--user u:p`)."""
    return lambda host: (user, secret)


class Registry:
    """One client for every registry a caller touches; close it (or use it
    as a context manager) to close its connections."""

    def __init__(self, options: Options | None = None):
        self.options = options or Options()
        self.authorizer = Authorizer(self.options.credentials)
        self._clients: dict[tuple, httpx.Client] = {}
        self._hosts: dict[str, list[RegistryHost]] = {}

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    # -- endpoints and requests ---------------------------------------------

    def hosts(self, ref: reference.Reference, capability: str) -> list[RegistryHost]:
        if ref.domain not in self._hosts:
            o = self.options
            self._hosts[ref.domain] = configure_hosts(ref.domain, o.hosts_dir, o.plain_http, o.skip_verify, o.ca_file)
        found = [h for h in self._hosts[ref.domain] if capability in h.capabilities]
        if not found:
            raise errdefs.NotFound(f"no {capability} hosts")
        return found

    def _client(self, host: RegistryHost) -> httpx.Client:
        key = (tuple(host.ca_files), host.skip_verify, tuple(host.client_pairs))
        client = self._clients.get(key)
        if client is None:
            verify: ssl.SSLContext | bool = True
            if host.skip_verify:
                verify = False
            elif host.ca_files or host.client_pairs:
                ctx = ssl.create_default_context()
                for f in host.ca_files:
                    try:
                        ctx.load_verify_locations(cafile=f)
                    except (OSError, ssl.SSLError):
                        raise errdefs.InvalidArgument(f"unable to load CA cert {errdefs.go_quote(f)}") from None
                for cert, key_file in host.client_pairs:
                    ctx.load_cert_chain(cert, key_file or None)
                verify = ctx
            client = httpx.Client(verify=verify, timeout=self.options.timeout, follow_redirects=True,
                                  headers={"User-Agent": "pycontainerd"})
            self._clients[key] = client
        return client

    def _request(self, host: RegistryHost, method: str, url: str, scope: str, *,
                 headers: dict | None = None, stream: bool = False,
                 content_factory: Callable[[], object] | None = None,
                 ok_retry: bool = True) -> httpx.Response:
        """One request with auth, retries on 5xx and transport errors.
        `content_factory` makes the body afresh for each attempt."""
        client = self._client(host)
        authorized_once = False
        attempt = 0
        while True:
            h = {k: ", ".join(v) for k, v in host.headers.items()}
            h.update(headers or {})
            auth = self.authorizer.header(host.host, scope)
            if auth:
                h["Authorization"] = auth
            req = client.build_request(method, url, headers=h,
                                       content=content_factory() if content_factory else None)
            try:
                resp = client.send(req, stream=stream)
            except httpx.TransportError as exc:
                # nobody listening (or a refused certificate) is not a
                # passing fault: fail at once, naming the address; a
                # connection dropped after it was made is retried
                if not ok_retry or attempt >= self.options.retries or isinstance(exc, httpx.ConnectError):
                    raise errdefs.Unavailable(
                        f"failed to do request: {method} {errdefs.cut(url)}: {_transport_reason(exc)}") from None
                attempt += 1
                time.sleep(self.options.backoff * (2 ** (attempt - 1)))
                continue
            if resp.status_code == 401 and not authorized_once:
                resp.close()
                self.authorizer.answer(client, host.host, scope, resp)
                authorized_once = True
                continue
            if resp.status_code == 401:
                resp.close()
                self.authorizer.answer(client, host.host, scope, resp)  # raises: refused again
                raise errdefs.PermissionDenied(f"{host.host}: authorization failed")
            if resp.status_code in RETRY_STATUSES and ok_retry and attempt < self.options.retries:
                resp.close()
                attempt += 1
                time.sleep(self.options.backoff * (2 ** (attempt - 1)))
                continue
            return resp

    @staticmethod
    def _scope(ref: reference.Reference, push: bool = False, extra: tuple[str, ...] = ()) -> str:
        scope = f"repository:{ref.path}:{'pull,push' if push else 'pull'}"
        return " ".join((scope,) + extra)

    # -- resolve ---------------------------------------------------------------

    def resolve(self, ref_text: str) -> tuple[str, Descriptor]:
        """The normalised name and the descriptor `ref_text` points at."""
        ref = _parse(ref_text)
        name = str(ref)
        first_error: Exception | None = None
        accept = ", ".join(mediatypes.MANIFEST_ACCEPT)
        for host in self.hosts(ref, RESOLVE):
            url = f"{host.base_url}/{ref.path}/manifests/{ref.object}"
            try:
                resp = self._request(host, "HEAD", url, self._scope(ref), headers={"Accept": accept})
            except errdefs.PermissionDenied as exc:
                first_error = first_error or errdefs.PermissionDenied(
                    f"pull access denied, repository does not exist or may require authorization: {exc.message}")
                continue
            except errdefs.ContainerdError as exc:
                first_error = first_error or exc
                continue
            resp.close()
            if resp.status_code == 404:
                continue
            if resp.status_code > 299:
                first_error = first_error or errdefs.Unknown(
                    f"pulling from host {host.host} failed with status code {url}: {_status(resp)}")
                continue
            dgst = ref.digest or resp.headers.get("docker-content-digest", "")
            size = int(resp.headers.get("content-length", "-1") or -1)
            media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip()
            if dgst and _digest.digest_error(dgst) is not None:
                raise errdefs.InvalidArgument(f"{errdefs.go_quote(dgst)} in header not a valid digest")
            if not dgst or size < 0 or not media_type or media_type == "application/octet-stream":
                got = self._get_manifest(host, ref, url, accept)
                if got is None:
                    continue
                data, media_type = got
                actual = "sha256:" + hashlib.sha256(data).hexdigest()
                if ref.digest and ref.digest != actual:
                    first_error = first_error or errdefs.FailedPrecondition(
                        f"manifest {ref.digest} from {host.host} has digest {actual}")
                    continue
                dgst, size = actual, len(data)
            return name, Descriptor(media_type, dgst, size)
        raise first_error or errdefs.NotFound(name)

    def _get_manifest(self, host, ref, url, accept) -> tuple[bytes, str] | None:
        resp = self._request(host, "GET", url, self._scope(ref), headers={"Accept": accept}, stream=True)
        try:
            if resp.status_code == 404:
                return None
            if resp.status_code > 299:
                raise errdefs.Unknown(f"pulling from host {host.host} failed with status code {url}: {_status(resp)}")
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > MAX_MANIFEST:
                    raise errdefs.NotFound(f"rejecting {len(buf)} byte manifest for {ref}")
            media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip()
            return bytes(buf), media_type
        finally:
            resp.close()

    # -- fetch -----------------------------------------------------------------

    def fetch(self, ref_text: str, desc: Descriptor) -> Iterator[bytes]:
        """`desc`'s bytes in chunks. Raises FailedPrecondition when more
        bytes than `desc.size` arrive (at once) or when the total or the
        digest differ (after the last chunk): a caller that commits only
        after the iterator ends never keeps wrong content."""
        ref = _parse(ref_text)
        kind = "manifests" if (mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(desc.media_type)) \
            else "blobs"
        alg = desc.digest.partition(":")[0]
        if _digest.digest_error(desc.digest) is not None:
            raise errdefs.InvalidArgument(f"invalid digest {errdefs.go_quote(errdefs.cut(desc.digest, 80))}")
        hasher = hashlib.new(alg)
        received = 0
        for chunk in self._fetch_stream(ref, desc, kind):
            received += len(chunk)
            if received > desc.size:
                raise errdefs.FailedPrecondition(
                    f"{desc.digest}: more than the expected {desc.size} bytes were served")
            hasher.update(chunk)
            yield chunk
        if received != desc.size:
            raise errdefs.FailedPrecondition(
                f"{desc.digest}: unexpected commit size {received}, expected {desc.size}")
        actual = f"{alg}:{hasher.hexdigest()}"
        if actual != desc.digest:
            raise errdefs.FailedPrecondition(f"unexpected commit digest {actual}, expected {desc.digest}")

    def fetch_bytes(self, ref_text: str, desc: Descriptor, limit: int = MAX_MANIFEST) -> bytes:
        """A small object (manifest, index, config) whole, verified."""
        if desc.size > limit:
            raise errdefs.InvalidArgument(f"{desc.digest}: {desc.size} bytes is more than the {limit} allowed")
        return b"".join(self.fetch(ref_text, desc))

    def fetch_to_file(self, ref_text: str, desc: Descriptor, path: str) -> None:
        """`desc` into `path`, which appears only once verified (temp name,
        fsync, rename)."""
        tmp = f"{path}.{os.getpid()}.partial"
        try:
            with open(tmp, "wb") as f:
                for chunk in self.fetch(ref_text, desc):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _fetch_stream(self, ref: reference.Reference, desc: Descriptor, kind: str) -> Iterator[bytes]:
        first_error: Exception | None = None
        for host in self.hosts(ref, PULL):
            url = f"{host.base_url}/{ref.path}/{kind}/{desc.digest}"
            headers = {"Accept": ", ".join([desc.media_type, "*/*"])} if desc.media_type else {}
            offset = 0
            drops = 0
            while True:
                h = dict(headers)
                if offset:
                    h["Range"] = f"bytes={offset}-"
                try:
                    resp = self._request(host, "GET", url, self._scope(ref), headers=h, stream=True)
                except errdefs.ContainerdError as exc:
                    if offset:
                        raise
                    first_error = first_error or exc
                    break
                try:
                    if resp.status_code == 404 and not offset:
                        first_error = first_error or errdefs.NotFound(f"content at {url} not found")
                        break
                    if resp.status_code > 299:
                        raise errdefs.Unknown(f"unexpected status code {url}: {_status(resp)}")
                    skip = 0
                    if offset and resp.status_code != 206:
                        skip = offset  # the registry ignored Range: drop what we already have
                    elif offset and not resp.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                        raise errdefs.Unknown(
                            f"unhandled content range in response: {errdefs.cut(resp.headers.get('content-range', ''))}")
                    try:
                        for chunk in resp.iter_bytes():  # as it arrives: a drop loses nothing received
                            if skip:
                                if len(chunk) <= skip:
                                    skip -= len(chunk)
                                    continue
                                chunk, skip = chunk[skip:], 0
                            offset += len(chunk)
                            yield chunk
                    except httpx.TransportError as exc:
                        drops += 1
                        if drops > self.options.retries:
                            raise errdefs.Unavailable(
                                f"{desc.digest}: connection dropped {drops} times: {_transport_reason(exc)}") from None
                        time.sleep(self.options.backoff * (2 ** (drops - 1)))
                        continue  # resume from offset
                    return
                finally:
                    resp.close()
        raise first_error or errdefs.NotFound(f"could not fetch content descriptor {desc.digest} from remote")

    # -- push ------------------------------------------------------------------

    def blob_exists(self, ref_text: str, dgst: str) -> bool:
        ref = _parse(ref_text)
        host = self.hosts(ref, PUSH)[0]
        resp = self._request(host, "HEAD", f"{host.base_url}/{ref.path}/blobs/{dgst}", self._scope(ref, True))
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise errdefs.Unknown(f"checking blob {dgst}: unexpected status {_status(resp)}")

    def push_blob(self, ref_text: str, desc: Descriptor, opener: Callable[[], BinaryIO],
                  mount_from: tuple[str, ...] = ()) -> str:
        """Make `desc` present in `ref`'s repository. Returns what happened:
        `exists` (the registry had it), `mounted` (linked from one of the
        `mount_from` repository paths of the same registry, no bytes sent) or `uploaded`. `opener`
        opens the bytes afresh for each attempt."""
        ref = _parse(ref_text)
        if self.blob_exists(ref_text, desc.digest):
            return "exists"
        host = self.hosts(ref, PUSH)[0]
        uploads = f"{host.base_url}/{ref.path}/blobs/uploads/"
        for src_path in mount_from:  # repository paths on the same registry
            scope = self._scope(ref, True, (f"repository:{src_path}:pull",))
            resp = self._request(host, "POST", f"{uploads}?mount={desc.digest}&from={src_path}", scope,
                                 headers={"Content-Length": "0"})
            resp.close()
            if resp.status_code == 201:
                return "mounted"
            if resp.status_code == 202:
                return self._upload(host, ref, desc, opener, resp.headers.get("location", ""), uploads)
            # any other answer: fall back to a plain upload
        resp = self._request(host, "POST", uploads, self._scope(ref, True), headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code != 202:
            raise errdefs.Unknown(f"starting upload to {uploads}: unexpected status {_status(resp)}")
        return self._upload(host, ref, desc, opener, resp.headers.get("location", ""), uploads)

    def _upload(self, host, ref, desc: Descriptor, opener, location: str, base: str) -> str:
        if not location:
            raise errdefs.Unknown("registry started an upload without a Location")
        location = urljoin(base, location)
        scope = self._scope(ref, True)
        chunk_size = self.options.chunk_size
        if chunk_size > 0 and desc.size > 0:
            with opener() as f:
                offset = 0
                while offset < desc.size:
                    data = f.read(chunk_size)
                    if not data:
                        break
                    end = offset + len(data) - 1
                    resp = self._request(host, "PATCH", location, scope, ok_retry=False,
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Content-Range": f"{offset}-{end}",
                                                  "Content-Length": str(len(data))},
                                         content_factory=lambda d=data: d)
                    resp.close()
                    if resp.status_code != 202:
                        raise errdefs.Unknown(f"uploading chunk at {offset}: unexpected status {_status(resp)}")
                    location = urljoin(base, resp.headers.get("location", location))
                    offset += len(data)
            sep = "&" if "?" in location else "?"
            resp = self._request(host, "PUT", f"{location}{sep}digest={desc.digest}", scope, ok_retry=False,
                                 headers={"Content-Length": "0"})
        else:
            sep = "&" if "?" in location else "?"

            def body() -> Iterator[bytes]:
                with opener() as f:
                    while True:
                        data = f.read(CHUNK)
                        if not data:
                            return
                        yield data

            resp = self._request(host, "PUT", f"{location}{sep}digest={desc.digest}", scope, ok_retry=False,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(desc.size)},
                                 content_factory=body)
        _check_pushed(resp, (201, 204), f"finishing upload of {desc.digest}", desc)
        return "uploaded"

    def manifest_exists(self, ref_text: str, desc: Descriptor, tag: str | None = None) -> bool:
        """Whether the registry already serves `desc` under `tag` (the ref's
        own tag by default, its digest when it names none): a HEAD whose
        digest header, when it answers by tag, must be `desc`'s."""
        ref = _parse(ref_text)
        host = self.hosts(ref, PUSH)[0]
        name = tag if tag is not None else (ref.tag or desc.digest)
        resp = self._request(host, "HEAD", f"{host.base_url}/{ref.path}/manifests/{name}", self._scope(ref, True),
                             headers={"Accept": f"{desc.media_type}, */*"})
        resp.close()
        if resp.status_code == 200:
            return name == desc.digest or resp.headers.get("docker-content-digest") == desc.digest
        if resp.status_code == 404:
            return False
        raise errdefs.Unknown(f"checking manifest {desc.digest}: unexpected status {_status(resp)}")

    def push_manifest(self, ref_text: str, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        """PUT a manifest or index under `tag` (the ref's own tag by
        default; its digest when it names none)."""
        ref = _parse(ref_text)
        host = self.hosts(ref, PUSH)[0]
        name = tag if tag is not None else (ref.tag or desc.digest)
        url = f"{host.base_url}/{ref.path}/manifests/{name}"
        resp = self._request(host, "PUT", url, self._scope(ref, True),
                             headers={"Content-Type": desc.media_type, "Content-Length": str(len(data))},
                             content_factory=lambda: data)
        _check_pushed(resp, (200, 201), f"pushing manifest {desc.digest} to {url}", desc)


def _check_pushed(resp: httpx.Response, ok: tuple[int, ...], what: str, desc: Descriptor) -> None:
    """A push's final answer: one of the `ok` statuses, and the digest the
    registry says it stored (when it says one) is the one pushed."""
    resp.close()
    if resp.status_code not in ok:
        raise errdefs.Unknown(f"{what}: unexpected status {_status(resp)}")
    got = resp.headers.get("docker-content-digest", desc.digest)
    if got != desc.digest:
        raise errdefs.FailedPrecondition(f"got digest {got}, expected {desc.digest}")


def _parse(ref_text: str) -> reference.Reference:
    try:
        return reference.parse_docker_ref(ref_text)
    except reference.ReferenceError as exc:
        raise errdefs.InvalidArgument(f"{exc}: {errdefs.go_quote(errdefs.cut(ref_text, 128))}") from None


def _status(resp: httpx.Response) -> str:
    return f"{resp.status_code} {resp.reason_phrase}".strip()


def _transport_reason(exc: httpx.TransportError) -> str:
    """Why a connection failed, in Go's words where the socket layer gave an
    errno ("connect: connection refused"), without Python's "[Errno N]"."""
    text = str(exc) or "connection failed"
    m = re.match(r"\[Errno -?\d+\] (.*)", text)
    if m:
        reason = m.group(1)
        text = reason[:1].lower() + reason[1:]
        if isinstance(exc, httpx.ConnectError):
            text = "connect: " + text
    return errdefs.cut(text, 200)
