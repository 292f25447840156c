"""A real registry (Debian's `docker-registry`) for the tests, and small
images built by hand.

`RegistryProcess` writes a config (storage in a temp dir, 127.0.0.1 on a
free port, optional htpasswd Basic auth and TLS), starts the registry, waits
until `/v2/` answers, and stops it by its pid. `make_image` builds a tiny
OCI image (a gzipped layer tar, a config, a manifest) entirely in memory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

import httpx

from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import Index, Manifest, ManifestDescriptor, index_bytes, manifest_bytes
from pycontainerd.pkg.oci.descriptor import Descriptor
from pycontainerd.pkg.platforms import Platform

REGISTRY = "/usr/bin/docker-registry"
HTPASSWD = "/usr/bin/htpasswd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryProcess:
    """One docker-registry subprocess; `stop()` ends it by pid."""

    def __init__(self, users: dict[str, str] | None = None, tls: bool = False,
                 token: "TokenServer | None" = None):
        self.dir = tempfile.mkdtemp(prefix="pcd-reg-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ca_file = ""
        storage = os.path.join(self.dir, "data")
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}"]
        if tls:
            cert, key = self._make_tls()
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if users:
            htpasswd = os.path.join(self.dir, "htpasswd")
            for user, password in users.items():  # bcrypt lines, as the registry requires
                out = subprocess.run([HTPASSWD, "-Bbn", user, password], check=True, capture_output=True).stdout
                with open(htpasswd, "ab") as f:
                    f.write(out.strip() + b"\n")
            lines += ["auth:", "  htpasswd:", "    realm: pycontainerd-test", f"    path: {htpasswd}"]
        if token is not None:
            lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                      f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert}"]
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.storage = storage
        self.log = open(os.path.join(self.dir, "registry.log"), "wb")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config], stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(scheme="https" if tls else "http")

    def _make_tls(self) -> tuple[str, str]:
        d = self.dir
        ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
        key, csr, crt = os.path.join(d, "srv.key"), os.path.join(d, "srv.csr"), os.path.join(d, "srv.crt")
        ext = os.path.join(d, "san.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
                "-subj", "/CN=pycontainerd test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
                "-days", "2", "-extfile", ext)
        self.ca_file = ca_crt
        return crt, key

    def _wait(self, scheme: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.proc.returncode}: {self.read_log()}")
            try:
                httpx.get(f"{scheme}://{self.host}/v2/", verify=False, timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}")

    def read_log(self) -> str:
        with open(os.path.join(self.dir, "registry.log"), "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    def blob_data_path(self, dgst: str) -> str:
        hexpart = dgst.split(":", 1)[1]
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hexpart[:2], hexpart, "data")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Blob:
    desc: Descriptor
    data: bytes


@dataclass
class Image:
    """A hand-made image: its blobs (layers, config), manifest and platform."""

    platform: Platform
    layers: list[Blob]
    config: Blob
    manifest: Blob
    extra: dict = field(default_factory=dict)

    @property
    def blobs(self) -> list[Blob]:
        return [*self.layers, self.config]


def _blob(media_type: str, data: bytes) -> Blob:
    return Blob(Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data)), data)


def layer(files: dict[str, bytes]) -> tuple[Blob, str]:
    """A gzipped layer holding `files`, and its diff id (digest of the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, mtime=0)
    return _blob(mediatypes.OCI_LAYER_GZIP, gz), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def make_image(platform: Platform, files: list[dict[str, bytes]]) -> Image:
    layers, diff_ids = [], []
    for f in files:
        b, diff_id = layer(f)
        layers.append(b)
        diff_ids.append(diff_id)
    config = {"architecture": platform.architecture, "os": platform.os,
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {"Cmd": ["/bin/sh"]}}
    if platform.variant:
        config["variant"] = platform.variant
    cfg = _blob(mediatypes.OCI_CONFIG, json.dumps(config, sort_keys=True).encode())
    m = Manifest(mediatypes.OCI_MANIFEST, cfg.desc, [b.desc for b in layers])
    return Image(platform, layers, cfg, _blob(mediatypes.OCI_MANIFEST, manifest_bytes(m)))


def make_index(images: list[Image]) -> Blob:
    entries = [ManifestDescriptor(i.manifest.desc.media_type, i.manifest.desc.digest, i.manifest.desc.size,
                                  {}, i.platform) for i in images]
    return _blob(mediatypes.OCI_INDEX, index_bytes(Index(mediatypes.OCI_INDEX, entries)))


class TokenServer:
    """A Bearer token server: answers containerd's OAuth POST (a form with
    `grant_type=password`, `username`, `password`, `scope`, `service`) with
    `{"access_token": ...}` and the classic `GET /token?service=..&scope=..`
    (credentials as Basic auth, or none) with `{"token": ...}`. Tokens are
    JWTs granting the requested scopes, signed with the `openssl` CLI (RS256
    with an RSA key, or ES256 with a P-256 key), the signing certificate in
    their `x5c` header; the registry trusts that certificate. With
    `post=False` the POST answers 404, as token servers without OAuth do.
    `requests` lists (method, user, scopes) per token request; anonymous
    requests get a token too (anonymous pulls are allowed)."""

    service = "pycontainerd-test"
    issuer = "pycontainerd-test-issuer"

    def __init__(self, users: dict[str, str], alg: str = "RS256", post: bool = True):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.users, self.alg, self.post = users, alg, post
        self.requests: list[tuple[str, str, list[str]]] = []
        self.dir = tempfile.mkdtemp(prefix="pcd-tok-")
        self.key, self.cert = os.path.join(self.dir, "tok.key"), os.path.join(self.dir, "tok.crt")
        if alg == "ES256":
            subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.key],
                           check=True, capture_output=True)
            subprocess.run(["openssl", "req", "-x509", "-key", self.key, "-out", self.cert, "-days", "2",
                            "-subj", "/CN=pycontainerd token signer"], check=True, capture_output=True)
        else:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out",
                            self.cert, "-days", "2", "-subj", "/CN=pycontainerd token signer"],
                           check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                q = parse_qs(urlsplit(self.path).query)
                user = server.check(self.headers.get("Authorization", ""))
                server.requests.append(("GET", user or "", q.get("scope", [])))
                if user is None:
                    return self._answer(401)
                self._answer(200, {"token": server.sign(q.get("scope", []))})

            def do_POST(self) -> None:
                from urllib.parse import parse_qs

                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0") or 0)).decode())
                one = lambda k: form.get(k, [""])[0]
                scopes = one("scope").split()
                server.requests.append(("POST", one("username"), scopes))
                if not server.post:
                    return self._answer(404)
                if (one("grant_type") != "password" or one("client_id") != "containerd-client"
                        or server.users.get(one("username")) != one("password")):
                    return self._answer(401, {"error": "invalid_grant"})
                self._answer(200, {"access_token": server.sign(scopes), "expires_in": 300})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def check(self, header: str) -> str | None:
        """The user whose Basic credentials are right, "" for none given,
        None for wrong ones."""
        if not header:
            return ""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def sign(self, scopes: list[str]) -> str:
        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "test", "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": self.alg, "x5c": [self.x5c]}
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        if self.alg == "ES256":
            sig = _ecdsa_der_to_raw(sig, 32)
        return signing_input + "." + b64(sig)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _ecdsa_der_to_raw(der: bytes, size: int) -> bytes:
    """openssl's ECDSA signature (DER: SEQUENCE of INTEGER r, INTEGER s) as
    JWS wants it: r and s, each big-endian in `size` bytes."""
    def length(i: int) -> tuple[int, int]:
        first = der[i]
        if first < 0x80:
            return first, i + 1
        n = first & 0x7F
        return int.from_bytes(der[i + 1:i + 1 + n], "big"), i + 1 + n

    assert der[0] == 0x30
    _, i = length(1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n, i = length(i + 1)
        out += int.from_bytes(der[i:i + n], "big").to_bytes(size, "big")
        i += n
    return out
