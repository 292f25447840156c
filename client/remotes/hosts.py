"""Which endpoints serve a registry: containerd's hosts directory
(`<dir>/<host>/hosts.toml`, its remotes/docker/config package).

Each `[host."<url>"]` table is a mirror, tried in the order the file lists
them; the top-level `server` (or, without one, the registry itself) comes
last. A mirror only serves the operations its `capabilities` name (`pull`,
`resolve`, `push`; all three when the key is absent). Relative `ca` paths
are read from the host's directory. Without a hosts directory, or without a
file for the registry, the registry itself is the only endpoint:
`registry-1.docker.io` for `docker.io`, plain HTTP for localhost unless
told otherwise, HTTPS elsewhere unless `plain_http`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PULL, RESOLVE, PUSH = "pull", "resolve", "push"
ALL_CAPABILITIES = frozenset({PULL, RESOLVE, PUSH})


class HostsConfigError(ValueError):
    """A hosts.toml that cannot be used; the message names the file."""


@dataclass
class RegistryHost:
    """One endpoint: where to send requests and how to trust it."""

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: frozenset[str] = ALL_CAPABILITIES
    ca_files: list[str] = field(default_factory=list)
    client_pairs: list[tuple[str, str]] = field(default_factory=list)
    skip_verify: bool | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def is_localhost(host: str) -> bool:
    """containerd's IsLocalhost: `localhost` or a loopback address, with
    or without a port."""
    name = host
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_dir_paths(root: str, host: str) -> list[str]:
    """Where a registry's directory may be, in containerd's order:
    `host_port_` (the colon made a file-name-safe form), `host:port`, then
    `_default`."""
    out = []
    idx = host.rfind(":")
    if idx > 0:
        out.append(os.path.join(root, f"{host[:idx]}_{host[idx + 1:]}_"))
    out += [os.path.join(root, host), os.path.join(root, "_default")]
    return out


def _string_list(value, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise HostsConfigError(f"{where}: invalid type for {what!r}")


def _abs(p: str, base: str) -> str:
    return p if os.path.isabs(p) else os.path.join(base, p)


def _parse_host(server: str, base: str, table: dict, where: str) -> RegistryHost:
    scheme, host, path = "", "", ""
    override = bool(table.get("override_path", False))
    if server:
        if not server.startswith("http"):
            server = "https://" + server
        u = urlsplit(server)
        scheme, host = u.scheme, u.netloc
        if u.path:
            path = os.path.normpath(u.path)
            if not path.endswith("/v2") and not override:
                path += "/v2"
        elif not override:
            path = "/v2"
    caps = table.get("capabilities")
    if caps:
        lowered = [c.lower() for c in _string_list(caps, "capabilities", where)]
        unknown = [c for c in lowered if c not in ALL_CAPABILITIES]
        if unknown:
            raise HostsConfigError(f"{where}: unknown capability {unknown[0]}")
        capabilities = frozenset(lowered)
    else:
        capabilities = ALL_CAPABILITIES
    ca = [_abs(p, base) for p in _string_list(table["ca"], "ca", where)] if "ca" in table else []
    pairs: list[tuple[str, str]] = []
    client = table.get("client")
    if isinstance(client, str):
        pairs = [(_abs(client, base), "")]
    elif isinstance(client, list):
        for item in client:
            if isinstance(item, str):
                pairs.append((_abs(item, base), ""))
            elif isinstance(item, list) and len(item) == 2:
                pairs.append((_abs(item[0], base), _abs(item[1], base)))
            else:
                raise HostsConfigError(f"{where}: invalid pair for 'client'")
    skip = table.get("skip_verify")
    headers = {k: _string_list(v, f"header {k}", where) for k, v in (table.get("header") or {}).items()}
    return RegistryHost(scheme, host, path, capabilities, ca, pairs,
                        bool(skip) if skip is not None else None, headers)


def parse_hosts_file(base_dir: str, data: bytes, where: str = "hosts.toml") -> list[RegistryHost]:
    """The endpoints one hosts.toml names: its mirrors in file order, then
    the `server` entry (whose host is empty when the file names none)."""
    try:
        doc = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HostsConfigError(f"failed to parse TOML {where}: {exc}") from None
    hosts = [_parse_host(url, base_dir, table or {}, where) for url, table in (doc.get("host") or {}).items()]
    hosts.append(_parse_host(str(doc.get("server", "")), base_dir, doc, where))
    return hosts


def configure_hosts(registry: str, hosts_dir: str = "", plain_http: bool = False,
                    skip_verify: bool = False, ca_file: str = "") -> list[RegistryHost]:
    """The endpoints for `registry`, best first (containerd's ConfigureHosts
    with a host directory, as ctr's `--hosts-dir` and `--plain-http` set it)."""
    hosts: list[RegistryHost] | None = None
    if hosts_dir:
        for d in host_dir_paths(hosts_dir, registry):
            if os.path.isdir(d):
                f = os.path.join(d, "hosts.toml")
                if os.path.exists(f):
                    with open(f, "rb") as fh:
                        hosts = parse_hosts_file(d, fh.read(), f)
                break
    if hosts is None:
        hosts = [RegistryHost("", "")]
    default_scheme = "http" if plain_http else ""
    last = hosts[-1]
    if hosts and last.host == "":
        if registry == "docker.io":
            last.scheme, last.host = "https", "registry-1.docker.io"
        elif is_localhost(registry):
            last.host = registry
            if default_scheme in ("", "http"):
                last.scheme, last.skip_verify = "http", True
            else:
                last.scheme = default_scheme
        else:
            last.host = registry
            last.scheme = default_scheme or "https"
        last.path, last.capabilities = "/v2", ALL_CAPABILITIES
    for h in hosts:
        if skip_verify:
            h.skip_verify = True
        if ca_file and not h.ca_files:
            h.ca_files = [ca_file]
    return hosts
