"""Plugin registrations and how they reach the core.

A plugin is a `Registration`: what it is (type, id), what it needs
(`requires`, plugin types), its config dataclass and its async `init`.
Modules hand registrations over through one pluggy hook,
`pycontainerd_plugins()`. The built-in modules are listed with the
plugins (plugins/builtins.py); third-party distributions declare an entry point in the
group `pycontainerd.plugins`. Each source is loaded on its own, so one that
fails to import or returns garbage becomes an `error` row instead of taking
the daemon down.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import pluggy

from . import entrypoints

PROJECT = "pycontainerd"
ENTRY_POINT_GROUP = "pycontainerd.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginType:
    """containerd's plugin type strings."""

    INTERNAL = "io.containerd.internal.v1"
    RUNTIME = "io.containerd.runtime.v1"
    RUNTIME_V2 = "io.containerd.runtime.v2"
    SERVICE = "io.containerd.service.v1"
    GRPC = "io.containerd.grpc.v1"
    TTRPC = "io.containerd.ttrpc.v1"
    SNAPSHOT = "io.containerd.snapshotter.v1"
    TASK_MONITOR = "io.containerd.monitor.v1"
    DIFF = "io.containerd.differ.v1"
    METADATA = "io.containerd.metadata.v1"
    CONTENT = "io.containerd.content.v1"
    GC = "io.containerd.gc.v1"
    EVENT = "io.containerd.event.v1"


ALL = "*"  # in `requires`: every other plugin


@dataclass(frozen=True, kw_only=True)
class Registration:
    """One plugin, declared the way containerd's plugin.Registration is."""

    type: str
    id: str
    init: Callable[[Any], Awaitable[Any]]
    requires: tuple[str, ...] = ()
    config: type | None = None
    platforms: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"

    def validate(self) -> None:
        """Raise ValueError for a registration containerd would refuse."""
        if not self.type:
            raise ValueError("plugin: type required")
        if not self.id:
            raise ValueError(f"plugin {self.type}: id required")
        if not callable(self.init):
            raise ValueError(f"plugin {self.uri}: init is not callable")
        if ALL in self.requires and len(self.requires) > 1:
            raise ValueError(f"plugin {self.uri}: invalid requires: \"*\" must be the only requirement")
        if self.type in self.requires:
            raise ValueError(f"plugin {self.uri}: cannot require its own type {self.type}")
        if self.config is not None and not dataclasses.is_dataclass(self.config):
            raise ValueError(f"plugin {self.uri}: config must be a dataclass")


@dataclass(frozen=True)
class LoadFailure:
    """A source of registrations that could not be loaded, or a bad
    registration. It is listed as a plugin with status `error`."""

    type: str
    id: str
    error: str

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"


class PluginSpec:
    @hookspec
    def pycontainerd_plugins(self) -> Iterable[Registration]:
        """Return the registrations this module provides."""


def _uri_from_name(name: str) -> tuple[str, str]:
    """An entry point named like a plugin URI gives that type and id;
    otherwise the failure is filed under the internal type."""
    parts = name.rsplit(".", 1)
    if name.startswith("io.containerd.") and len(parts) == 2 and name.count(".") >= 4:
        return parts[0], parts[1]
    return PluginType.INTERNAL, name


def _registrations_of(source: str, hook: Callable | None) -> tuple[list[Registration], list[LoadFailure]]:
    default_type, default_id = _uri_from_name(source)
    if hook is None:
        return [], [LoadFailure(default_type, default_id, f"{source}: no @hookimpl pycontainerd_plugins")]
    try:
        produced = list(hook() or ())
    except Exception as exc:  # a broken plugin must not stop the others
        return [], [LoadFailure(default_type, default_id, f"{source}: {type(exc).__name__}: {exc}")]
    good, bad = [], []
    for reg in produced:
        if not isinstance(reg, Registration):
            bad.append(LoadFailure(default_type, default_id, f"{source}: returned {type(reg).__name__}, not a Registration"))
            continue
        try:
            reg.validate()
        except ValueError as exc:
            bad.append(LoadFailure(reg.type or default_type, reg.id or default_id, str(exc)))
            continue
        good.append(reg)
    return good, bad


class _PluginManager(pluggy.PluginManager):
    """pluggy looks at every attribute of every registered module for hook
    implementations (~600 for the built-ins, through inspect.getattr_static:
    ~6 ms of every start). Ours are named after the hook, so only names of
    the `pycontainerd_` family are looked at."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if not name.startswith(PROJECT + "_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)


def builtin_modules() -> tuple[str, ...]:
    """The built-in plugin modules, from the list the plugins keep."""
    from pycontainerd.plugins import builtins

    return builtins.MODULES


def discover(
    builtin: Iterable[str] | None = None,
    extra: Iterable[Any] = (),
    entry_points: bool = True,
) -> tuple[list[Registration], list[LoadFailure]]:
    """Collect registrations: built-in modules (by default every one in
    plugins/builtins.py), then `extra` (modules or objects with the hook,
    used by pycontainerd.testing), then entry points.

    Returns (registrations in order, failures). Duplicate URIs keep the
    first registration; the later ones are failures.
    """
    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(PluginSpec)
    sources: list[tuple[str, Any]] = []
    failures: list[LoadFailure] = []

    for name in builtin_modules() if builtin is None else builtin:
        sources.append((name, importlib.import_module(name)))  # our own: must import
    for i, obj in enumerate(extra):
        sources.append((getattr(obj, "__name__", f"extra{i}"), obj))
    if entry_points:
        for ep in entrypoints.entry_points(ENTRY_POINT_GROUP):
            try:
                sources.append((ep.name, ep.load()))
            except Exception as exc:  # isolated: becomes an error row
                t, i = _uri_from_name(ep.name)
                failures.append(LoadFailure(t, i, f"load entry point {ep.name} ({ep.value}): {type(exc).__name__}: {exc}"))

    registrations: list[Registration] = []
    seen: set[str] = set()
    for name, module in sources:
        try:
            pm.register(module, name=f"{name}#{id(module)}")
        except Exception as exc:
            t, i = _uri_from_name(name)
            failures.append(LoadFailure(t, i, f"{name}: {exc}"))
            continue
        impls = [i for i in pm.hook.pycontainerd_plugins.get_hookimpls() if i.plugin is module]
        good, bad = _registrations_of(name, impls[0].function if impls else None)
        failures += bad
        for reg in good:
            if reg.uri in seen:
                failures.append(LoadFailure(reg.type, reg.id, f"plugin {reg.uri} already registered"))
                continue
            seen.add(reg.uri)
            registrations.append(reg)
    return registrations, failures
