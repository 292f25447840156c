"""pyctr's registry options end to end, against pycontainerd and real
registries (Debian's docker-registry): HTTPS with a CA the test creates,
named by a hosts.toml `ca` entry (the real ctr reads the same hosts
directory); a hosts.toml mirror with `header` entries (every request to
the mirror carries them); Bearer auth with a token server the test runs;
Basic auth with htpasswd; push and pull each way."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms

from proxy_support import RegistryProxy
from registry_support import REGISTRY, RegistryProcess, TokenServer, make_image

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

HOST = platforms.default_spec()


@pytest.fixture(scope="module")
def plain():
    reg = RegistryProcess()
    yield reg
    reg.stop()


def _upload(ref: str, img, **opts) -> None:
    with Registry(Options(**opts)) as client:
        for b in img.blobs:
            client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
        client.push_manifest(ref, img.manifest.desc, img.manifest.data)


def _hosts_dir(base: str, host: str, text: str, files: dict[str, str] | None = None) -> str:
    d = os.path.join(base, "hosts.d")
    os.makedirs(os.path.join(d, host), exist_ok=True)
    with open(os.path.join(d, host, "hosts.toml"), "w") as f:
        f.write(text)
    for name, src in (files or {}).items():
        shutil.copy(src, os.path.join(d, host, name))
    return d


def _local_image(d, plain: RegistryProcess, name: str):
    """An image in the daemon, pulled from the plain registry."""
    img = make_image(HOST, [{"etc/id": name.encode() + b"\n"}, {"bin/x": os.urandom(5000)}])
    ref = f"{plain.host}/local/{name}:v1"
    _upload(ref, img, plain_http=True)
    d.pyctr("images", "pull", "--plain-http", ref)
    return img, ref


def test_https_with_a_ca_from_hosts_toml(daemon, plain):
    d = daemon()
    tls = RegistryProcess(tls=True)
    try:
        img, local = _local_image(d, plain, "tls")
        # 127.0.0.1 is plain HTTP unless a hosts.toml says https, as in containerd
        hosts = _hosts_dir(d.dir, tls.host, f'server = "https://{tls.host}"\n\n'
                                            f'[host."https://{tls.host}"]\n  ca = "ca.crt"\n',
                           {"ca.crt": tls.ca_file})
        remote = f"{tls.host}/secure/app:v1"
        d.pyctr("images", "push", "--hosts-dir", hosts, remote, local)
        d.pyctr("images", "rm", local, remote, check=False)
        d.pyctr("images", "pull", "--hosts-dir", hosts, remote)
        assert remote in d.ctr("images", "ls", "-q").stdout.decode().split()
        # the real ctr reads the same hosts directory
        d.ctr("images", "rm", remote)
        d.ctr("images", "pull", "--hosts-dir", hosts, remote)
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [remote]

        # without the CA the certificate is refused
        bare = _hosts_dir(os.path.join(d.dir, "bare"), tls.host, f'server = "https://{tls.host}"\n')
        r = d.pyctr("images", "pull", "--hosts-dir", bare, remote, check=False)
        assert r.returncode == 1 and "certificate verify failed" in r.stderr.decode().lower()
        assert "Traceback" not in r.stderr.decode()
        # --skip-verify accepts it
        d.pyctr("images", "pull", "--skip-verify", "--hosts-dir", bare, remote)
    finally:
        tls.stop()


def test_mirror_with_headers_from_hosts_toml(daemon, plain):
    d = daemon()
    img = make_image(HOST, [{"etc/mirrored": b"from the mirror\n"}])
    _upload(f"{plain.host}/library/mirrored:1", img, plain_http=True)
    proxy = RegistryProxy(plain.host)
    try:
        hosts = _hosts_dir(d.dir, "docker.io",
                           'server = "https://registry-1.docker.io"\n\n'
                           f'[host."http://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n'
                           f'  [host."http://{proxy.host}".header]\n    x-custom-1 = "one"\n'
                           '    x-custom-2 = ["two", "three"]\n')
        d.pyctr("images", "pull", "--hosts-dir", hosts, "mirrored:1")
        assert d.ctr("images", "ls", "-q").stdout.decode().split() == ["docker.io/library/mirrored:1"]
        assert proxy.seen and all(s.headers.get("x-custom-1") == "one" for s in proxy.seen)
        assert all(s.headers.get("x-custom-2") == "two, three" for s in proxy.seen)
        assert {s.path.split("/")[4] for s in proxy.gets("/blobs/")} == {"blobs"}
    finally:
        proxy.close()


def _same_scopes(requests: list) -> list:
    """Token requests with each scope's actions in one order, duplicates gone."""
    def norm(scope: str) -> str:
        head, _, actions = scope.rpartition(":")
        return f"{head}:{','.join(sorted(set(actions.split(','))))}"
    return [(method, user, sorted({norm(x) for x in scopes})) for method, user, scopes in requests]


def test_bearer_token_push_and_pull(daemon, plain):
    d = daemon()
    tokens = TokenServer(users={"bob": "pw"})
    reg = RegistryProcess(token=tokens)
    try:
        img, local = _local_image(d, plain, "bearer")
        remote = f"{reg.host}/team/app:v1"
        out = d.pyctr("images", "push", "--plain-http", "--user", "bob:pw", remote, local).stdout.decode()
        assert f"manifest-{img.manifest.desc.digest}:" in out
        # one OAuth POST per scope for the whole push. The blobs' source
        # label names local/bearer on host 127.0.0.1 (containerd keys it by
        # host name without port), so a mount from there is tried, with its
        # own scope: a second token, as containerd would ask for. Blobs go
        # up in parallel, so the two may come in either order, and a token
        # asked in answer to the registry's challenge also carries its
        # "push,pull" spelling (containerd's GetTokenScopes keeps both too)
        assert sorted(_same_scopes(tokens.requests)) == sorted([
            ("POST", "bob", ["repository:team/app:pull", "repository:team/app:pull,push"]),
            ("POST", "bob", ["repository:local/bearer:pull", "repository:team/app:pull,push"])])

        d.pyctr("images", "rm", local)
        del tokens.requests[:]
        d.pyctr("images", "pull", "--plain-http", "--user", "bob:pw", remote)
        assert tokens.requests == [("POST", "bob", ["repository:team/app:pull"])]
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [remote]

        r = d.pyctr("images", "push", "--plain-http", "--user", "bob:wrong", remote, check=False)
        assert r.returncode == 1
        assert "failed to fetch oauth token: unexpected status: 401 Unauthorized" in r.stderr.decode()
    finally:
        reg.stop()
        tokens.stop()


def test_basic_auth_push_and_pull(daemon, plain):
    d = daemon()
    reg = RegistryProcess(users={"alice": "s3cret"})
    try:
        img, local = _local_image(d, plain, "basic")
        remote = f"{reg.host}/private/app:v1"
        r = d.pyctr("images", "push", "--plain-http", remote, local, check=False)
        assert r.returncode == 1 and "no credentials were given" in r.stderr.decode()
        d.pyctr("images", "push", "--plain-http", "--user", "alice:s3cret", remote, local)
        d.pyctr("images", "rm", local)
        d.pyctr("images", "pull", "--plain-http", "--user", "alice:s3cret", remote)
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [remote]
        r = d.pyctr("images", "pull", "--plain-http", "--user", "alice:nope", remote, check=False)
        assert r.returncode == 1 and 'refused the credentials of user "alice"' in r.stderr.decode()
    finally:
        reg.stop()
