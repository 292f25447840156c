"""config.toml, containerd's version 2 format.

Loading follows containerd: the main file first, then its `imports`
(globs, relative to the importing file, breadth-first, each file once),
each merged over what came before: scalars replace, lists append, plugin
tables merge key by key, `proxy_plugins`/`timeouts`/`stream_processors`
entries replace whole. Keys in the sections we own are checked strictly:
an unknown key names the file, the table and the nearest valid key. Plugin
sections are decoded into each plugin's config dataclass by the daemon,
with the same strictness, once it knows which plugins exist.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any


from pycontainerd.pkg.defaults import (  # noqa: F401 (the config's defaults, re-exported)
    DEFAULT_ADDRESS,
    DEFAULT_CONFIG_PATH,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_ROOT,
    DEFAULT_STATE,
)

CONFIG_VERSION = 2


class ConfigError(ValueError):
    """A config problem, worded for the person editing the file."""


# -- checked fields ------------------------------------------------------------
#
# A config dataclass declares what a valid value is next to the field, so
# `decode` can name the file, the table and the key of a bad value before
# anything starts (a plugin's init is too late: its failure only removes the
# plugin, and everything that requires it, from the running daemon).

MAX_INT32 = (1 << 31) - 1
MAX_ID = (1 << 32) - 2  # uid/gid: 2^32-1 is "no change" to chown


def _check_duration(value: Any) -> str | None:
    from pycontainerd.pkg import goduration

    try:
        goduration.parse(value)
    except goduration.DurationError as exc:
        return f"invalid duration: {exc}"
    return None


def duration(default: str) -> Any:
    """A field holding a Go duration string ("100ms", "1h30m")."""
    return field(default=default, metadata={"check": _check_duration})


def ranged(default: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Any:
    """A number field that must lie in [low, high] ((low, high] with low_open)."""

    def check(value: Any) -> str | None:
        too_low = low is not None and (value <= low if low_open else value < low)
        if value == value and not too_low and (high is None or value <= high):  # NaN is never in range
            return None
        if high is None:
            return f"out of range: must be {'>' if low_open else '>='} {low}"
        return f"out of range: must be in {'(' if low_open else '['}{low}, {high}]"

    return field(default=default, metadata={"check": check})


def choice(default: str, *allowed: str, any_case: bool = False) -> Any:
    """A string field with a fixed set of values (lower-case ones, if any_case)."""

    def check(value: Any) -> str | None:
        if (value.lower() if any_case else value) not in allowed:
            return "must be one of " + ", ".join(f'"{a}"' for a in allowed)
        return None

    return field(default=default, metadata={"check": check})


def _bounded(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class GRPCConfig:
    """[grpc]: the API socket and its limits."""

    address: str = DEFAULT_ADDRESS
    tcp_address: str = ""  # refused when set: pycontainerd serves only its UNIX socket
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    uid: int = ranged(0, 0, MAX_ID)
    gid: int = ranged(0, 0, MAX_ID)
    # gRPC keeps message limits in a signed 32-bit int
    max_recv_message_size: int = ranged(DEFAULT_MAX_MESSAGE_SIZE, 1, MAX_INT32)
    max_send_message_size: int = ranged(DEFAULT_MAX_MESSAGE_SIZE, 1, MAX_INT32)


@dataclass
class TTRPCConfig:
    """[ttrpc]: the ttrpc socket (address, owner)."""

    address: str = ""
    uid: int = ranged(0, 0, MAX_ID)
    gid: int = ranged(0, 0, MAX_ID)


@dataclass
class DebugConfig:
    """[debug]: the debug socket (core/debugserver.py: an absolute path is a
    UNIX socket owned by uid/gid, anything else host:port), log level and
    format (text or json)."""

    address: str = ""
    uid: int = ranged(0, 0, MAX_ID)
    gid: int = ranged(0, 0, MAX_ID)
    # containerd's (logrus') level names, in any case; its format names as they are
    level: str = choice("", "", "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic", any_case=True)
    format: str = choice("", "", "text", "json")


@dataclass
class MetricsConfig:
    """[metrics]: where Prometheus metrics are served (host:port, at
    /v1/metrics), and whether gRPC calls are timed (plugins/metrics/)."""

    address: str = ""
    grpc_histogram: bool = False


@dataclass
class CgroupConfig:
    """[cgroup]: the daemon's own cgroup."""

    path: str = ""


@dataclass
class ProxyPlugin:
    """[proxy_plugins.<name>]: a plugin served by another process."""

    type: str = ""
    address: str = ""


@dataclass
class StreamProcessor:
    """[stream_processors.<name>]: a binary that converts one media type to another."""

    accepts: list[str] = field(default_factory=list)
    returns: str = ""
    path: str = ""
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)


def _default_timeouts() -> dict[str, str]:
    return {
        "io.containerd.timeout.shim.cleanup": "5s",
        "io.containerd.timeout.shim.load": "5s",
        "io.containerd.timeout.shim.shutdown": "3s",
        "io.containerd.timeout.task.state": "2s",
    }


@dataclass
class Config:
    """The whole config.toml (version 2), after imports and merging."""

    version: int = CONFIG_VERSION
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    temp: str = ""
    plugin_dir: str = ""
    imports: list[str] = field(default_factory=list)
    disabled_plugins: list[str] = field(default_factory=list)
    required_plugins: list[str] = field(default_factory=list)
    oom_score: int = 0
    grpc: GRPCConfig = field(default_factory=GRPCConfig)
    ttrpc: TTRPCConfig = field(default_factory=TTRPCConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cgroup: CgroupConfig = field(default_factory=CgroupConfig)
    timeouts: dict[str, str] = field(default_factory=_default_timeouts)
    stream_processors: dict[str, StreamProcessor] = field(default_factory=dict)
    proxy_plugins: dict[str, ProxyPlugin] = field(default_factory=dict)
    # Raw plugin tables by URI; decoded per plugin by `decode_plugin_config`.
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Which file last set each plugin table (for error messages); not TOML.
    plugin_origins: dict[str, str] = field(default_factory=dict, metadata={"toml": False})

    @property
    def ttrpc_address(self) -> str:
        return self.ttrpc.address or self.grpc.address + ".ttrpc"

    def inert_settings(self) -> list[str]:
        """The keys containerd knows that this config sets to something
        pycontainerd does not act on (each once, however often it is set)."""
        out = []
        default = Config()
        for name in ("temp", "plugin_dir", "oom_score"):
            if getattr(self, name) != getattr(default, name):
                out.append(name)
        for section in ("grpc", "ttrpc", "debug", "metrics", "cgroup"):
            ours, base = getattr(self, section), getattr(default, section)
            for f in dataclasses.fields(ours):
                if f"{section}.{f.name}" in _HONOURED:
                    continue
                if getattr(ours, f.name) != getattr(base, f.name):
                    out.append(f"{section}.{f.name}")
        if self.stream_processors:
            out.append("stream_processors")
        out += [f'timeouts."{k}"' for k, v in self.timeouts.items()
                if default.timeouts.get(k) != v and k not in _HONOURED_TIMEOUTS]
        return out

    def validate(self) -> None:
        """containerd's ValidateV2 (plugin names are full URIs), and what
        this daemon can serve on: a UNIX socket path, never TCP."""
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"unsupported config version {self.version}: only version = 2 is supported")
        for what, names in (("disabled", self.disabled_plugins), ("required", self.required_plugins)):
            for name in names:
                if not _is_uri(name):
                    raise ConfigError(f'invalid {what} plugin URI "{name}" expect io.containerd.x.vx')
        for name in self.plugins:
            if not _is_uri(name):
                raise ConfigError(f'invalid plugin key URI "{name}" expect io.containerd.x.vx')
        address = self.grpc.address
        if not address:
            raise ConfigError("[grpc] address is empty: it must be the path of the UNIX socket to serve on")
        if "://" in address:
            raise ConfigError(
                f"[grpc] address {_bounded(address)} is not a path: it must be the path of the UNIX socket to serve on"
            )
        if self.grpc.tcp_address:
            raise ConfigError(
                f"[grpc] tcp_address {_bounded(self.grpc.tcp_address)}: serving on TCP is not supported; "
                "remove it (the API is served on [grpc] address only)"
            )
        for name, proxy in self.proxy_plugins.items():
            if proxy.type not in ("snapshot", "content"):
                raise ConfigError(f"proxy plugin {name!r}: unsupported type {proxy.type!r} (expected \"snapshot\" or \"content\")")
            if not proxy.address:
                raise ConfigError(f"proxy plugin {name!r}: address is required")

    def to_toml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("toml", True):
                out[f.name] = _to_plain(getattr(self, f.name))
        return out

    def dumps(self) -> str:
        import toml  # only for printing; not on the start-up path

        return toml.dumps(self.to_toml_dict())


# [section] keys the daemon acts on; the others are accepted for containerd's
# sake and reported by Config.inert_settings when set
_HONOURED = frozenset({
    "grpc.address", "grpc.tcp_address", "grpc.uid", "grpc.gid",
    "grpc.max_recv_message_size", "grpc.max_send_message_size",
    "debug.level", "debug.format", "debug.address", "debug.uid", "debug.gid",
    "metrics.address", "metrics.grpc_histogram",
    "ttrpc.address", "ttrpc.uid", "ttrpc.gid",  # the daemon's ttrpc socket (shims' events)
})
# the [timeouts] the runtime v2 plugin applies to its shims
_HONOURED_TIMEOUTS = frozenset({
    "io.containerd.timeout.shim.cleanup", "io.containerd.timeout.shim.load",
    "io.containerd.timeout.shim.shutdown", "io.containerd.timeout.task.state",
})


def _is_uri(name: str) -> bool:
    return len(name.split(".")) >= 4  # containerd's rule: type (3 parts) + id; any vendor prefix


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# -- strict decoding ---------------------------------------------------------

def _unknown_key(source: str, table: str, key: str, valid: list[str]) -> ConfigError:
    import difflib  # only when reporting an error

    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f'; did you mean "{near[0]}"?' if near else f" (valid keys: {', '.join(sorted(valid))})"
    where = f"[{table}]" if table else "the top level"
    return ConfigError(f'{source}: unknown key "{key}" in {where}{hint}')


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return True
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(origin, type):
        return isinstance(value, origin)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _element_hint(hint: Any) -> Any:
    """str for list[str] and tuple[str, ...]; Any when unsaid."""
    args = typing.get_args(hint)
    return args[0] if args else Any


def decode(cls: type, data: dict[str, Any], source: str, table: str) -> Any:
    """Build dataclass `cls` from a TOML table, refusing unknown keys,
    values of the wrong type and values a field's check refuses, naming
    `source` and `table`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{table}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(source, table, key, list(fields))
        hint = hints[key]
        sub = f"{table}.{key}" if table else key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = decode(hint, value, source, sub)
            continue
        if not _type_ok(value, hint):
            raise ConfigError(f"{source}: {sub} = {_bounded(value)}: expected {_type_name(hint)}")
        if typing.get_origin(hint) in (list, tuple):
            item = _element_hint(hint)
            for i, v in enumerate(value):
                if item is not Ellipsis and not _type_ok(v, item):
                    raise ConfigError(f"{source}: {sub}[{i}] = {_bounded(v)}: expected {_type_name(item)}")
            if typing.get_origin(hint) is tuple:
                value = tuple(value)
        check = fields[key].metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{source}: {sub} = {_bounded(value)}: {problem}")
        kwargs[key] = value
    return cls(**kwargs)


def decode_plugin_config(cls: type, cfg: Config, uri: str) -> Any:
    """The plugin's config: its dataclass defaults overlaid with its table."""
    data = cfg.plugins.get(uri, {})
    return decode(cls, data, cfg.plugin_origins.get(uri, "config"), f'plugins."{uri}"')


# -- reading and merging -------------------------------------------------------

def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # binary garbage, or another encoding
        raise ConfigError(f"{path}: not a TOML file: invalid UTF-8 at byte {exc.start}") from None
    # tomllib, not toml: toml 0.10 accepts some broken files (an unclosed
    # array at the end) and reports others at the wrong column
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg, where = str(exc), re.search(r" \(at line (\d+), column (\d+)\)$", str(exc))
        if where:
            line, col, msg = int(where[1]), int(where[2]), msg[: where.start()]
        else:  # "(at end of document)"
            line, col = text.count("\n") + 1, len(text) - text.rfind("\n")
            msg = msg.replace(" (at end of document)", "") + " at end of document"
        raise ConfigError(f"{path}: invalid TOML at line {line}, column {col}: {msg}") from None


def _resolve_imports(parent: str, patterns: list[str]) -> list[str]:
    out: list[str] = []
    for i, pattern in enumerate(patterns):
        if not pattern:  # would name the importing file's directory
            raise ConfigError(f"{parent}: imports[{i}] is empty")
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(os.path.abspath(parent)), pattern)
        import glob

        if glob.has_magic(pattern):
            out += sorted(os.path.normpath(m) for m in glob.glob(pattern))  # each file once, whatever the spelling
        else:
            out.append(os.path.normpath(pattern))
    return out


_REPLACED_MAPS = ("proxy_plugins", "timeouts", "stream_processors")
_TOP_KEYS = [f.name for f in dataclasses.fields(Config) if f.metadata.get("toml", True)]


def _check_file(raw: dict[str, Any], path: str) -> None:
    """Strict checks for the sections we own, per file, so the error names
    the file the key is in."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise _unknown_key(path, "", key, _TOP_KEYS)
    for key in _REPLACED_MAPS:
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(f"{path}: [{key}] must be a table")
    for name, table in raw.get("stream_processors", {}).items():
        decode(StreamProcessor, table, path, f'stream_processors."{name}"')
    for name, value in raw.get("timeouts", {}).items():
        problem = _check_duration(value) if isinstance(value, str) else "expected a duration string"
        if problem:
            raise ConfigError(f'{path}: timeouts."{name}" = {_bounded(value)}: {problem}')
    owned = {k: v for k, v in raw.items() if k not in ("plugins", *_REPLACED_MAPS)}
    decode(Config, owned, path, "")
    for name, table in raw.get("proxy_plugins", {}).items():
        decode(ProxyPlugin, table, path, f"proxy_plugins.{name}")
    if not isinstance(raw.get("plugins", {}), dict):
        raise ConfigError(f"{path}: [plugins] must be a table")
    for uri, table in raw.get("plugins", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f'{path}: plugins."{uri}" must be a table')


def _merge(into: dict[str, Any], new: dict[str, Any], origins: dict[str, str], path: str) -> None:
    for key, value in new.items():
        if key == "plugins":
            plugins = into.setdefault("plugins", {})
            for uri, table in value.items():
                _deep_merge(plugins.setdefault(uri, {}), table)
                origins[uri] = path
        elif key in _REPLACED_MAPS:
            into.setdefault(key, {}).update(value)
        elif isinstance(value, list):
            into[key] = into.get(key, []) + [v for v in value if v not in into.get(key, [])]
        elif isinstance(value, dict):
            _deep_merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _apply_aliases(plugins: dict[str, Any], origins: dict[str, str]) -> None:
    """A section under containerd's name for a plugin we implement under
    another id (plugins/builtins.py CONFIG_ALIASES) becomes that plugin's
    section, so its keys are honoured and checked, not ignored; the
    section under our own name wins key by key."""
    from pycontainerd.plugins.builtins import CONFIG_ALIASES

    for alias, target in CONFIG_ALIASES.items():
        if alias in plugins:
            table = plugins.pop(alias)
            plugins[target] = {**table, **plugins.get(target, {})}
            origins.setdefault(target, origins.get(alias, ""))


def load(path: str) -> Config:
    """Load `path` and its imports into one validated Config."""
    main = os.path.abspath(path)
    pending, loaded = [main], []
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    main_version = None
    importer: dict[str, str] = {}  # file -> the file whose imports named it
    while pending:
        current = pending.pop(0)
        if current in loaded:
            continue
        try:
            raw = read_toml(current)
        except ConfigError as exc:
            if current == main:
                raise
            raise ConfigError(f"{importer[current]}: imports: {exc}") from None
        _check_file(raw, current)
        version = raw.get("version", 1)
        if main_version is None:
            main_version = version
            if "version" not in raw:
                raise ConfigError(f"{current}: no version set (that is version 1): set version = 2")
            if version != CONFIG_VERSION:
                raise ConfigError(f"{current}: unsupported config version {version}: set version = 2")
        elif version > main_version:
            raise ConfigError(f"{current}: config version {version} is newer than the main config's {main_version}")
        else:
            raw.pop("version", None)  # the main file's version is the config's version
        imports = raw.pop("imports", [])
        _merge(merged, raw, origins, current)
        loaded.append(current)
        for name in _resolve_imports(current, imports):
            importer.setdefault(name, current)
            pending.append(name)
    _apply_aliases(merged.get("plugins", {}), origins)
    cfg = decode(Config, {k: v for k, v in merged.items() if k not in ("plugins", *_REPLACED_MAPS)}, main, "")
    cfg.timeouts = {**_default_timeouts(), **merged.get("timeouts", {})}
    cfg.plugins = merged.get("plugins", {})
    cfg.plugin_origins = origins
    cfg.proxy_plugins = {n: decode(ProxyPlugin, t, main, f"proxy_plugins.{n}") for n, t in merged.get("proxy_plugins", {}).items()}
    cfg.stream_processors = {
        n: decode(StreamProcessor, t, main, f'stream_processors."{n}"')
        for n, t in merged.get("stream_processors", {}).items()
    }
    cfg.imports = loaded[1:]
    try:
        cfg.validate()
    except ConfigError as exc:  # containerd's wording, naming the file
        raise ConfigError(f"failed to load TOML from {main}: {exc}") from None
    return cfg
