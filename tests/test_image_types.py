"""Shared image types (platforms, media types, manifests and indexes) and
the registry client's pure parts (hosts.toml, auth challenges), with
containerd's answers written out."""

from __future__ import annotations

import json

import pytest

from pycontainerd.client.remotes.auth import parse_challenges
from pycontainerd.client.remotes.hosts import (
    HostsConfigError,
    configure_hosts,
    host_dir_paths,
    is_localhost,
    parse_hosts_file,
)
from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import (
    detect_media_type,
    parse_index,
    parse_manifest,
    select_manifest,
    select_manifests,
)

P = platforms.Platform


@pytest.mark.parametrize("spec, expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("Linux/AMD64", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64/v8"),
    ("linux/arm64/8", "linux/arm64/v8"),  # the 3-part form always names arm64's variant
    ("linux/arm", "linux/arm"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/armhf", "linux/arm"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/arm/v5", "linux/arm/v5"),
    ("linux/i386", "linux/386"),
    ("windows/amd64", "windows/amd64"),
    ("macos/arm64", "darwin/arm64"),
    ("linux", platforms.default_string()),
    ("amd64", "linux/amd64"),
    ("arm64", "linux/arm64"),
])
def test_parse_and_format(spec, expected):
    assert platforms.format_platform(platforms.parse(spec)) == expected


@pytest.mark.parametrize("spec, message", [
    ("linux/*", '"linux/*": wildcards not yet supported'),
    ("lin ux", '"lin ux" is an invalid component of "lin ux": platform specifier component must match '
               '"^[A-Za-z0-9_-]+$"'),
    ("nosuchthing", '"nosuchthing": unknown operating system or architecture'),
    ("linux/arm/v7/extra", '"linux/arm/v7/extra": cannot parse platform specifier'),
])
def test_parse_errors(spec, message):
    with pytest.raises(errdefs.InvalidArgument) as err:
        platforms.parse(spec)
    assert str(err.value) == message + ": invalid argument"


def test_default_platform_is_this_machine():
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert platforms.default_string().startswith(f"linux/{arch}")
    assert platforms.default().match(platforms.default_spec())


@pytest.mark.parametrize("wanted, order", [
    # amd64 also runs 386
    ("linux/amd64", ["linux/amd64", "linux/386"]),
    # amd64 v3 also runs v2, v1 (which is plain amd64 once normalised) and 386
    ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
    # arm64 also runs arm v8 down to v5
    ("linux/arm64", ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
    # plain arm is v7: it also runs v6 and v5
    ("linux/arm", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
    ("linux/arm/v6", ["linux/arm/v6", "linux/arm/v5"]),
    ("linux/386", ["linux/386"]),
])
def test_only_matches_in_containerds_order(wanted, order):
    m = platforms.only(platforms.parse(wanted))
    assert [platforms.format_platform(p) for p in m.wanted] == order


def test_matching_normalises_and_is_strict_about_the_rest():
    m = platforms.only(P("linux", "arm64"))
    assert m.match(P("linux", "aarch64"))
    assert m.match(P("linux", "arm64", "v8"))
    assert m.match(P("linux", "arm", "v7"))
    assert not m.match(P("linux", "amd64"))
    assert not m.match(P("windows", "arm64"))
    assert m.less(P("linux", "arm64"), P("linux", "arm", "v7"))
    assert not m.less(P("linux", "arm", "v5"), P("linux", "arm", "v7"))
    strict = platforms.only_strict(P("linux", "amd64"))
    assert strict.match(P("linux", "x86_64")) and not strict.match(P("linux", "386"))


def test_media_types_as_containerd_spells_them():
    assert mediatypes.DOCKER_SCHEMA2_MANIFEST == "application/vnd.docker.distribution.manifest.v2+json"
    assert mediatypes.DOCKER_SCHEMA2_MANIFEST_LIST == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert mediatypes.DOCKER_SCHEMA2_CONFIG == "application/vnd.docker.container.image.v1+json"
    assert mediatypes.DOCKER_SCHEMA2_LAYER_GZIP == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert mediatypes.OCI_INDEX == "application/vnd.oci.image.index.v1+json"
    assert mediatypes.OCI_LAYER_GZIP == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert mediatypes.MANIFEST_ACCEPT == (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "*/*")
    for layer in (mediatypes.OCI_LAYER, mediatypes.OCI_LAYER_ZSTD, mediatypes.DOCKER_SCHEMA2_LAYER_GZIP,
                  mediatypes.DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP, "application/vnd.docker.image.rootfs.diff.tar+zstd"):
        assert mediatypes.is_layer(layer), layer
    assert not mediatypes.is_layer(mediatypes.OCI_CONFIG)
    assert mediatypes.is_non_distributable(mediatypes.DOCKER_SCHEMA2_LAYER_FOREIGN)


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")

INDEX = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_SCHEMA2_MANIFEST_LIST, "manifests": [
    {"mediaType": mediatypes.DOCKER_SCHEMA2_MANIFEST, "digest": D1, "size": 10,
     "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
    {"mediaType": mediatypes.DOCKER_SCHEMA2_MANIFEST, "digest": D2, "size": 11,
     "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
    {"mediaType": mediatypes.DOCKER_SCHEMA2_MANIFEST, "digest": D3, "size": 12,
     "platform": {"architecture": "amd64", "os": "linux"}},
]}).encode()


def test_index_platform_selection_prefers_the_closest():
    ix = parse_index(INDEX)
    assert ix.media_type == mediatypes.DOCKER_SCHEMA2_MANIFEST_LIST
    pick = lambda spec: select_manifest(ix, platforms.only(platforms.parse(spec)), "sha256:top").digest
    assert pick("linux/amd64") == D3
    assert pick("linux/arm64") == D2          # arm v7 is closer to arm64 than v6
    assert pick("linux/arm/v6") == D1
    assert [d.digest for d in select_manifests(ix, platforms.only(platforms.parse("linux/arm64")))] == [D2, D1]
    with pytest.raises(errdefs.NotFound) as err:
        select_manifest(ix, platforms.only(platforms.parse("linux/s390x")), "sha256:top")
    assert str(err.value) == "no match for platform in manifest sha256:top: not found"


def test_manifest_parsing_and_detection():
    data = json.dumps({"schemaVersion": 2, "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": D1, "size": 5},
                       "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": D2, "size": 7,
                                   "annotations": {"a": "b"}}]}).encode()
    assert detect_media_type(data) == mediatypes.OCI_MANIFEST
    assert detect_media_type(INDEX) == mediatypes.DOCKER_SCHEMA2_MANIFEST_LIST
    m = parse_manifest(data)
    assert (m.config.digest, m.config.size) == (D1, 5)
    assert [(d.digest, d.size, d.annotations) for d in m.layers] == [(D2, 7, {"a": "b"})]
    with pytest.raises(errdefs.InvalidArgument, match="manifest is not valid JSON"):
        parse_manifest(b"{nope")
    with pytest.raises(errdefs.InvalidArgument, match="layer 0: descriptor has no digest"):
        parse_manifest(json.dumps({"config": {"digest": D1, "size": 1}, "layers": [{"size": 1}]}).encode())
    with pytest.raises(errdefs.InvalidArgument, match="expected a manifest, got an index"):
        parse_manifest(INDEX)


def test_hosts_file_order_capabilities_and_paths(tmp_path):
    text = b'''
server = "https://registry.example.com"
ca = "root.pem"

[host."http://mirror-b:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://mirror-a.example.com/prefix"]
  capabilities = ["pull"]
  ca = ["/etc/ca/one.pem", "two.pem"]
  header = { x-team = "a" }

[host."https://mirror-c"]
  override_path = true
'''
    hosts = parse_hosts_file(str(tmp_path), text)
    assert [h.base_url for h in hosts] == ["http://mirror-b:5000/v2", "https://mirror-a.example.com/prefix/v2",
                                           "https://mirror-c", "https://registry.example.com/v2"]
    assert [sorted(h.capabilities) for h in hosts] == [["pull", "resolve"], ["pull"],
                                                      ["pull", "push", "resolve"], ["pull", "push", "resolve"]]
    assert hosts[0].skip_verify is True and hosts[1].skip_verify is None
    assert hosts[1].ca_files == ["/etc/ca/one.pem", str(tmp_path / "two.pem")]
    assert hosts[1].headers == {"x-team": ["a"]}
    assert hosts[3].ca_files == [str(tmp_path / "root.pem")]
    with pytest.raises(HostsConfigError, match="unknown capability delete"):
        parse_hosts_file(str(tmp_path), b'[host."https://m"]\ncapabilities = ["delete"]\n')
    with pytest.raises(HostsConfigError, match="failed to parse TOML"):
        parse_hosts_file(str(tmp_path), b"server = \n")


def test_configure_hosts_defaults_and_directory(tmp_path):
    def one(registry, **kw):
        return [(h.scheme, h.host, h.path) for h in configure_hosts(registry, **kw)]

    assert one("docker.io") == [("https", "registry-1.docker.io", "/v2")]
    assert one("example.com") == [("https", "example.com", "/v2")]
    assert one("example.com", plain_http=True) == [("http", "example.com", "/v2")]
    assert one("localhost:5000") == [("http", "localhost:5000", "/v2")]
    assert one("127.0.0.1:5000") == [("http", "127.0.0.1:5000", "/v2")]
    # a directory for the host (the host_port_ form first) puts its mirrors first
    (tmp_path / "example.com_5000_").mkdir()
    (tmp_path / "example.com_5000_" / "hosts.toml").write_text('[host."http://127.0.0.1:1"]\n')
    assert one("example.com:5000", hosts_dir=str(tmp_path)) == [("http", "127.0.0.1:1", "/v2"),
                                                               ("https", "example.com:5000", "/v2")]
    # _default serves every registry without its own directory
    (tmp_path / "_default").mkdir()
    (tmp_path / "_default" / "hosts.toml").write_text('server = "https://fallback.example.com"\n')
    assert one("other.example.com", hosts_dir=str(tmp_path)) == [("https", "fallback.example.com", "/v2")]
    assert host_dir_paths("/d", "r:5000") == ["/d/r_5000_", "/d/r:5000", "/d/_default"]
    assert is_localhost("localhost") and is_localhost("127.0.0.2:80") and is_localhost("[::1]:5000")
    assert not is_localhost("example.com:5000")


def test_www_authenticate_challenges():
    [c] = parse_challenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                           'scope="repository:a/b:pull,push"')
    assert (c.scheme, c.params) == ("bearer", {"realm": "https://auth.example.com/token",
                                               "service": "registry.example.com",
                                               "scope": "repository:a/b:pull,push"})
    cs = parse_challenges('Basic realm="reg \\"quoted\\"", Bearer realm=x, error=invalid_token')
    assert [(c.scheme, c.params) for c in cs] == [("basic", {"realm": 'reg "quoted"'}),
                                                  ("bearer", {"realm": "x", "error": "invalid_token"})]
