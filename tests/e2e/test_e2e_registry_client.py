"""The registry client against a real registry (Debian's docker-registry on
127.0.0.1): push a hand-made multi-platform image, resolve it by tag and by
digest, fetch everything back verified, pick a platform, skip and mount
blobs, catch tampered content, Basic auth, TLS with a CA, hosts.toml
mirrors, and a connection dropped mid-blob."""

from __future__ import annotations

import io
import os
import socket
import threading
import time

import httpx
import pytest

from pycontainerd.client.remotes import Options, Registry, static_credentials
from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifest
from pycontainerd.pkg.oci.descriptor import Descriptor

from registry_support import REGISTRY, Blob, RegistryProcess, TokenServer, free_port, make_image, make_index

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

AMD64 = platforms.Platform("linux", "amd64")
ARM64 = platforms.Platform("linux", "arm64", "v8")


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


def opener(blob: Blob):
    return lambda: io.BytesIO(blob.data)


def push_image(client: Registry, ref: str, images, index: Blob | None) -> list[str]:
    """Push every blob and manifest, then the index (or the one manifest)
    under the ref's tag; what push_blob said for each blob, in order."""
    outcomes = []
    for img in images:
        for b in img.blobs:
            outcomes.append(client.push_blob(ref, b.desc, opener(b)))
        client.push_manifest(ref, img.manifest.desc, img.manifest.data, tag=img.manifest.desc.digest)
    top = index if index is not None else images[0].manifest
    client.push_manifest(ref, top.desc, top.data)
    return outcomes


def two_platform_image():
    amd = make_image(AMD64, [{"etc/arch": b"amd64\n"}, {"bin/hello": b"hello from amd64\n"}])
    arm = make_image(ARM64, [{"etc/arch": b"arm64\n"}])
    return amd, arm, make_index([amd, arm])


def test_push_resolve_fetch_multiplatform(registry):
    ref = f"{registry.host}/test/multi:v1"
    amd, arm, index = two_platform_image()
    with Registry(Options(plain_http=True)) as client:
        assert push_image(client, ref, [amd, arm], index) == ["uploaded"] * 5

        name, desc = client.resolve(ref)
        assert name == ref
        assert (desc.media_type, desc.digest, desc.size) == (mediatypes.OCI_INDEX, index.desc.digest, index.desc.size)

        by_digest = f"{registry.host}/test/multi@{index.desc.digest}"
        name, desc2 = client.resolve(by_digest)
        assert name == by_digest
        assert (desc2.digest, desc2.size) == (index.desc.digest, index.desc.size)

        idx = parse_index(client.fetch_bytes(ref, desc))
        assert [m.platform for m in idx.manifests] == [AMD64, ARM64]
        for wanted, img in ((AMD64, amd), (ARM64, arm), (platforms.Platform("linux", "arm64"), arm)):
            chosen = select_manifest(idx, platforms.only(wanted), desc.digest)
            assert chosen.digest == img.manifest.desc.digest
            data = client.fetch_bytes(ref, chosen)
            assert data == img.manifest.data
            m = parse_manifest(data)
            assert client.fetch_bytes(ref, m.config) == img.config.data
            assert [b"".join(client.fetch(ref, layer)) for layer in m.layers] == [b.data for b in img.layers]

        with pytest.raises(errdefs.NotFound, match="no match for platform in manifest " + desc.digest):
            select_manifest(idx, platforms.only(platforms.Platform("linux", "s390x")), desc.digest)


def test_second_push_skips_existing_blobs(registry):
    ref = f"{registry.host}/test/again:v1"
    img = make_image(AMD64, [{"a": b"a\n"}, {"b": b"b\n"}])
    with Registry(Options(plain_http=True)) as client:
        assert push_image(client, ref, [img], None) == ["uploaded"] * 3
        assert push_image(client, ref, [img], None) == ["exists"] * 3


def test_cross_repository_mount(registry):
    img = make_image(AMD64, [{"big": os.urandom(200_000)}])
    layer = img.layers[0]
    with Registry(Options(plain_http=True)) as client:
        assert client.push_blob(f"{registry.host}/test/source:v1", layer.desc, opener(layer)) == "uploaded"

        def no_bytes():
            raise AssertionError("a mounted blob must not be read")

        dest = f"{registry.host}/test/dest:v1"
        assert client.push_blob(dest, layer.desc, no_bytes, mount_from=("test/source",)) == "mounted"
        assert b"".join(client.fetch(dest, layer.desc)) == layer.data


def test_chunked_upload(registry):
    ref = f"{registry.host}/test/chunked:v1"
    img = make_image(AMD64, [{"data": os.urandom(300_000)}])
    layer = img.layers[0]
    with Registry(Options(plain_http=True, chunk_size=64 * 1024)) as client:
        assert client.push_blob(ref, layer.desc, opener(layer)) == "uploaded"
        assert b"".join(client.fetch(ref, layer.desc)) == layer.data


def test_tampered_and_short_blobs_are_detected(registry, tmp_path):
    ref = f"{registry.host}/test/tamper:v1"
    img = make_image(AMD64, [{"one": os.urandom(50_000)}, {"two": os.urandom(50_000)}])
    with Registry(Options(plain_http=True)) as client:
        push_image(client, ref, [img], None)
        flipped, short = img.layers

        path = registry.blob_data_path(flipped.desc.digest)
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
        with pytest.raises(errdefs.FailedPrecondition, match=f"unexpected commit digest .*, expected {flipped.desc.digest}"):
            b"".join(client.fetch(ref, flipped.desc))
        target = tmp_path / "layer"
        with pytest.raises(errdefs.FailedPrecondition):
            client.fetch_to_file(ref, flipped.desc, str(target))
        assert os.listdir(tmp_path) == []  # nothing unverified is left behind

        # a descriptor that claims fewer bytes than are served: stopped at the overrun
        small = Descriptor(short.desc.media_type, short.desc.digest, 1000)
        received = []
        with pytest.raises(errdefs.FailedPrecondition, match="more than the expected 1000 bytes were served"):
            for chunk in client.fetch(ref, small):
                received.append(chunk)
        assert sum(map(len, received)) <= 1000

        path = registry.blob_data_path(short.desc.digest)
        os.truncate(path, short.desc.size - 100)
        with pytest.raises(errdefs.FailedPrecondition, match=f"unexpected commit size {short.desc.size - 100}, "
                                                              f"expected {short.desc.size}"):
            b"".join(client.fetch(ref, short.desc))


def test_unknown_tag_is_not_found_and_names_the_ref(registry):
    with Registry(Options(plain_http=True)) as client:
        with pytest.raises(errdefs.NotFound) as err:
            client.resolve(f"{registry.host}/test/nothing:missing")
    assert str(err.value) == f"{registry.host}/test/nothing:missing: not found"


def test_registry_down_fails_with_the_address():
    port = free_port()
    with Registry(Options(plain_http=True, retries=1, backoff=0.01)) as client:
        with pytest.raises(errdefs.Unavailable, match=f"127.0.0.1:{port}") as err:
            client.resolve(f"127.0.0.1:{port}/test/x:v1")
    # Go's words for the socket's error, not Python's "[Errno 111] Connection refused"
    assert str(err.value).endswith(": connect: connection refused: unavailable")
    assert "Errno" not in str(err.value)


def test_basic_auth():
    reg = RegistryProcess(users={"alice": "s3cret"})
    try:
        ref = f"{reg.host}/private/img:v1"
        img = make_image(AMD64, [{"x": b"x\n"}])
        with Registry(Options(plain_http=True, credentials=static_credentials("alice", "s3cret"))) as client:
            push_image(client, ref, [img], None)
            assert client.resolve(ref)[1].digest == img.manifest.desc.digest

        with Registry(Options(plain_http=True, credentials=static_credentials("alice", "wrong"))) as client:
            with pytest.raises(errdefs.PermissionDenied) as err:
                client.resolve(ref)
        assert 'refused the credentials of user "alice"' in str(err.value)
        assert "authorization failed" in str(err.value)

        with Registry(Options(plain_http=True)) as client:
            with pytest.raises(errdefs.PermissionDenied, match="no credentials were given"):
                client.resolve(ref)
    finally:
        reg.stop()


@pytest.mark.parametrize("alg,post", [("RS256", True), ("ES256", True), ("RS256", False)],
                         ids=["oauth-post-rs256", "oauth-post-es256", "get-fallback"])
def test_bearer_token_auth(alg, post):
    """The registry sends clients to a token server (run by the test, its
    JWTs signed RS256 or ES256). With credentials the client uses
    containerd's OAuth POST, or a GET with Basic auth where the server
    answers the POST 404; without, an anonymous GET. One token per scope
    serves every request of that scope; a wrong password is refused with
    containerd's words."""
    tokens = TokenServer(users={"bob": "pw"}, alg=alg, post=post)
    reg = RegistryProcess(token=tokens)
    try:
        ref = f"{reg.host}/team/img:v1"
        img = make_image(AMD64, [{"t": b"token\n"}, {"u": b"two\n"}])
        with Registry(Options(plain_http=True, credentials=static_credentials("bob", "pw"))) as client:
            assert push_image(client, ref, [img], None) == ["uploaded"] * 3
            assert client.resolve(ref)[1].digest == img.manifest.desc.digest
            assert client.fetch_bytes(ref, img.config.desc) == img.config.data
        # push asks for pull,push plus the scope the registry's challenge
        # named (sorted, as containerd's GetTokenScopes), the resolve and
        # fetch after it for pull alone: two tokens for a dozen requests
        push_scopes = ["repository:team/img:pull", "repository:team/img:pull,push"]
        if post:
            assert tokens.requests == [("POST", "bob", push_scopes), ("POST", "bob", ["repository:team/img:pull"])]
        else:
            assert tokens.requests == [("POST", "bob", push_scopes), ("GET", "bob", push_scopes),
                                       ("POST", "bob", ["repository:team/img:pull"]),
                                       ("GET", "bob", ["repository:team/img:pull"])]

        # without credentials the token is asked for anonymously
        del tokens.requests[:]
        with Registry(Options(plain_http=True)) as client:
            assert client.resolve(ref)[1].digest == img.manifest.desc.digest
        assert tokens.requests == [("GET", "", ["repository:team/img:pull"])]

        with Registry(Options(plain_http=True, credentials=static_credentials("bob", "nope"))) as client:
            with pytest.raises(errdefs.PermissionDenied) as err:
                client.resolve(ref)
        assert str(err.value) == (
            "pull access denied, repository does not exist or may require authorization: "
            "failed to fetch oauth token: unexpected status: 401 Unauthorized: permission denied")
    finally:
        reg.stop()
        tokens.stop()


def test_https_with_a_ca_file():
    reg = RegistryProcess(tls=True)
    try:
        ref = f"{reg.host}/secure/img:v1"
        img = make_image(AMD64, [{"x": b"tls\n"}])
        # 127.0.0.1 counts as localhost: plain HTTP unless told otherwise,
        # as in containerd; so the scheme comes from a hosts directory here
        with Registry(Options(ca_file=reg.ca_file, hosts_dir=_hosts_dir(reg, f'server = "https://{reg.host}"'))) as c:
            push_image(c, ref, [img], None)
            name, desc = c.resolve(ref)
            assert desc.digest == img.manifest.desc.digest
            assert c.fetch_bytes(ref, img.config.desc) == img.config.data
        with Registry(Options(retries=0, hosts_dir=_hosts_dir(reg, f'server = "https://{reg.host}"'))) as c:
            with pytest.raises(errdefs.Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
                c.resolve(ref)
    finally:
        reg.stop()


def _hosts_dir(reg: RegistryProcess, text: str) -> str:
    """A hosts directory whose `<host:port>/hosts.toml` holds `text`."""
    d = os.path.join(reg.dir, f"hosts{time.monotonic_ns()}")
    os.makedirs(os.path.join(d, reg.host))
    with open(os.path.join(d, reg.host, "hosts.toml"), "w") as f:
        f.write(text + "\n")
    return d


def test_hosts_toml_mirror_serves_docker_io(registry):
    """`docker.io/library/small:1` is served by a local mirror that may pull
    and resolve; the `server` (here an address nobody listens on) is never
    needed."""
    img = make_image(AMD64, [{"small": b"small\n"}])
    with Registry(Options(plain_http=True)) as client:
        push_image(client, f"{registry.host}/library/small:1", [img], None)
    dead = free_port()
    d = os.path.join(registry.dir, "hosts-mirror")
    os.makedirs(os.path.join(d, "docker.io"))
    with open(os.path.join(d, "docker.io", "hosts.toml"), "w") as f:
        f.write(f'server = "http://127.0.0.1:{dead}"\n\n'
                f'[host."http://{registry.host}"]\n  capabilities = ["pull", "resolve"]\n')
    with Registry(Options(hosts_dir=d, retries=0)) as client:
        name, desc = client.resolve("small:1")
        assert name == "docker.io/library/small:1"
        assert desc.digest == img.manifest.desc.digest
        m = parse_manifest(client.fetch_bytes(name, desc))
        assert b"".join(client.fetch(name, m.layers[0])) == img.layers[0].data
        # push is not among the mirror's capabilities: it goes to the server
        with pytest.raises(errdefs.Unavailable, match=f"127.0.0.1:{dead}"):
            client.push_blob(name, img.config.desc, opener(img.config))


class FaultyProxy:
    """A local HTTP proxy in front of the registry that misbehaves on
    purpose for requests whose path holds `target`: it answers the first
    `fail_first` of them 503, cuts the first GET body after `cut` bytes, or
    drops the digest header from HEAD answers. Everything else it forwards
    faithfully (Range included). `seen` lists (method, Range) per target
    request."""

    def __init__(self, upstream: str, target: str, cut: int = 0, fail_first: int = 0,
                 strip_head_digest: bool = False):
        self.upstream, self.target, self.cut = upstream, target, cut
        self.fail_first, self.strip_head_digest = fail_first, strip_head_digest
        self.seen: list[tuple[str, str]] = []
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, httpx.Client() as up:
            f = conn.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := f.readline().decode().strip()):
                    k, _, v = h.partition(":")
                    headers[k.strip()] = v.strip()
                body = f.read(int(headers.get("Content-Length", "0") or 0))
                targeted = self.target in path
                if targeted:
                    self.seen.append((method, headers.get("Range", "")))
                if targeted and self.fail_first > 0:
                    self.fail_first -= 1
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    continue
                fwd = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
                resp = up.request(method, f"http://{self.upstream}{path}", headers=fwd, content=body or None)
                skip = {"transfer-encoding", "connection", "content-length"}
                if targeted and method == "HEAD" and self.strip_head_digest:
                    skip.add("docker-content-digest")
                out = [f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}"]
                out += [f"{k}: {v}" for k, v in resp.headers.items() if k.lower() not in skip]
                out.append(f"Content-Length: {resp.headers.get('content-length', len(resp.content))}")
                conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode())
                if method == "HEAD":
                    continue
                if targeted and method == "GET" and self.cut and not self.dropped:
                    self.dropped += 1
                    conn.sendall(resp.content[:self.cut])
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(resp.content)

    def close(self) -> None:
        self.sock.close()


def test_dropped_connection_resumes_with_range(registry):
    ref_path = "test/resume:v1"
    img = make_image(AMD64, [{"blob": os.urandom(400_000)}])
    layer = img.layers[0]
    with Registry(Options(plain_http=True)) as client:
        push_image(client, f"{registry.host}/{ref_path}", [img], None)
    proxy = FaultyProxy(registry.host, layer.desc.digest, cut=150_000)
    try:
        with Registry(Options(plain_http=True, backoff=0.01)) as client:
            got = b"".join(client.fetch(f"{proxy.host}/{ref_path}", layer.desc))
        assert got == layer.data
        assert proxy.dropped == 1
        assert proxy.seen == [("GET", ""), ("GET", "bytes=150000-")]
    finally:
        proxy.close()


def test_5xx_answers_are_retried(registry):
    ref_path = "test/flaky:v1"
    img = make_image(AMD64, [{"f": b"flaky\n"}])
    layer = img.layers[0]
    with Registry(Options(plain_http=True)) as client:
        push_image(client, f"{registry.host}/{ref_path}", [img], None)
    proxy = FaultyProxy(registry.host, layer.desc.digest, fail_first=2)
    try:
        with Registry(Options(plain_http=True, backoff=0.01)) as client:
            assert b"".join(client.fetch(f"{proxy.host}/{ref_path}", layer.desc)) == layer.data
        assert proxy.seen == [("GET", "")] * 3
        proxy.fail_first = 10
        with Registry(Options(plain_http=True, retries=2, backoff=0.01)) as client:
            with pytest.raises(errdefs.Unknown, match="503 Service Unavailable"):
                b"".join(client.fetch(f"{proxy.host}/{ref_path}", layer.desc))
    finally:
        proxy.close()


def test_resolve_falls_back_to_get_when_head_has_no_digest(registry):
    ref_path = "test/nodigest:v1"
    img = make_image(AMD64, [{"n": b"n\n"}])
    with Registry(Options(plain_http=True)) as client:
        push_image(client, f"{registry.host}/{ref_path}", [img], None)
    proxy = FaultyProxy(registry.host, "/manifests/", strip_head_digest=True)
    try:
        with Registry(Options(plain_http=True)) as client:
            name, desc = client.resolve(f"{proxy.host}/{ref_path}")
        assert (desc.digest, desc.size, desc.media_type) == (img.manifest.desc.digest, img.manifest.desc.size,
                                                            mediatypes.OCI_MANIFEST)
        assert [m for m, _ in proxy.seen] == ["HEAD", "GET"]
    finally:
        proxy.close()


def _fetch_scenario(address: str, registry: RegistryProcess, repo: str) -> None:
    """What `fetch_into` leaves in a content store (pycontainerd's or a
    real containerd's), reached through its Content service under a lease."""
    from pycontainerd.client.client import Client
    from pycontainerd.client.content import ContentClient
    from pycontainerd.client.leases import Leases
    from pycontainerd.client.remotes.fetch import fetch_into

    ref = f"{registry.host}/{repo}:v1"
    amd, arm, index = two_platform_image()
    bad = make_image(AMD64, [{"bad": os.urandom(20_000)}])
    with Registry(Options(plain_http=True)) as reg:
        push_image(reg, ref, [amd, arm], index)
        push_image(reg, f"{registry.host}/{repo}:bad", [bad], None)
    with Client(address=address, namespace="fetchtest") as client, Registry(Options(plain_http=True)) as reg:
        lease = Leases(client).create("fetch-lease").id
        cc = ContentClient(client, lease=lease)
        try:
            # one platform: the index, the arm64 manifest, its config and layer
            name, root, stored = fetch_into(cc, reg, ref, platforms.only(ARM64))
            assert (name, root.digest) == (ref, index.desc.digest)
            assert [d.digest for d in stored] == [index.desc.digest, arm.manifest.desc.digest,
                                                  arm.config.desc.digest, arm.layers[0].desc.digest]
            infos = {i.digest: i for i in cc.list()}
            source = "containerd.io/distribution.source.127.0.0.1"  # the host without its port, as containerd
            assert infos[index.desc.digest].labels == {source: repo,
                                                       "containerd.io/gc.ref.content.m.0": arm.manifest.desc.digest}
            assert infos[arm.manifest.desc.digest].labels == {
                source: repo, "containerd.io/gc.ref.content.config": arm.config.desc.digest,
                "containerd.io/gc.ref.content.l.0": arm.layers[0].desc.digest}
            assert infos[arm.layers[0].desc.digest].labels == {source: repo}
            for blob in (index, arm.manifest, arm.config, arm.layers[0]):
                assert b"".join(cc.read(blob.desc.digest)) == blob.data

            # every platform: what is there already is kept, the rest fetched
            fetch_into(cc, reg, ref)
            expected = {b.desc.digest for b in (index, amd.manifest, arm.manifest, *amd.blobs, *arm.blobs)}
            assert expected <= {i.digest for i in cc.list()}
            assert cc.info(index.desc.digest).labels["containerd.io/gc.ref.content.m.1"] == arm.manifest.desc.digest

            # a tampered layer is never committed
            path = registry.blob_data_path(bad.layers[0].desc.digest)
            data = bytearray(open(path, "rb").read())
            data[-100] ^= 0xFF
            open(path, "wb").write(bytes(data))
            with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                fetch_into(cc, reg, f"{registry.host}/{repo}:bad")
            with pytest.raises(errdefs.NotFound):
                cc.info(bad.layers[0].desc.digest)
            # as containerd's content.Copy, the partial ingest stays (a retry
            # resumes it), held by the lease
            assert [st.ref for st in cc.list_statuses()] == ["layer-" + bad.layers[0].desc.digest]
        finally:
            Leases(client).delete(lease, sync=True)


def test_fetch_into_pycontainerd_content_store(registry, daemon):
    _fetch_scenario(daemon().address, registry, "fetch/pycontainerd")


@pytest.mark.containerd
def test_fetch_into_real_containerd_content_store(registry, containerd):
    _fetch_scenario(containerd.address, registry, "fetch/containerd")
