"""What a plugin's init receives, and the set of plugins loaded so far.

A plugin sees its own config, its own root and state directories
(`<root>/<type>.<id>`, created 0700 on first use), the daemon's addresses,
the events exchange, a `meta` to fill, lookups of plugins initialised
before it, and `spawn` for background tasks the daemon owns. A lookup
that fails says why: nothing of that type was registered, or the plugin
was skipped, or its init failed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from pycontainerd.pkg import errdefs
from .registry import Registration


class SkipPlugin(Exception):
    """Raised by an init that cannot run here. containerd's clients (ctr
    plugins ls) tell a skip from an error by the words "skip plugin"."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}: skip plugin")


@dataclass
class Meta:
    """What `plugins ls` shows of a plugin beside its status: platforms, exports, capabilities."""

    platforms: list[str] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)


@dataclass
class Plugin:
    """A plugin after init: its instance, or why it has none."""

    registration: Registration
    meta: Meta
    instance: Any = None
    error: BaseException | None = None
    duration: float = 0.0  # seconds spent in init

    @property
    def uri(self) -> str:
        return self.registration.uri

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        return "skip" if isinstance(self.error, SkipPlugin) else "error"


class PluginSet:
    """Plugins in init order, looked up the way containerd's plugin.Set is."""

    def __init__(self) -> None:
        self.ordered: list[Plugin] = []
        self._by_uri: dict[str, Plugin] = {}

    def add(self, plugin: Plugin) -> None:
        self.ordered.append(plugin)
        self._by_uri[plugin.uri] = plugin

    def __iter__(self):
        return iter(self.ordered)

    def get(self, type_: str, id_: str | None = None) -> Any:
        if id_ is not None:
            p = self._by_uri.get(f"{type_}.{id_}")
            if p is None:
                raise errdefs.NotFound(f"plugin {type_}.{id_} is not loaded")
            return _instance_or_reason(p)
        of_type = [p for p in self.ordered if p.registration.type == type_]
        if not of_type:
            raise errdefs.NotFound(f"no plugins registered for {type_}")
        usable = [p for p in of_type if p.error is None]
        if not usable:
            return _instance_or_reason(of_type[0])
        return usable[0].instance

    def get_all(self, type_: str) -> dict[str, Any]:
        """Usable instances of a type by id (skipped and failed left out)."""
        return {p.registration.id: p.instance for p in self.ordered if p.registration.type == type_ and p.error is None}


def _instance_or_reason(p: Plugin) -> Any:
    if p.error is None:
        return p.instance
    if isinstance(p.error, SkipPlugin):
        raise errdefs.NotFound(f"plugin {p.uri} was skipped: {p.error.reason}")
    raise errdefs.FailedPrecondition(f"plugin {p.uri} failed to load: {p.error}")


class InitContext:
    def __init__(
        self,
        registration: Registration,
        config: Any,
        root: str,
        state: str,
        address: str,
        ttrpc_address: str,
        events: Any,
        plugins: PluginSet,
        daemon_config: Any = None,
        tasks: Any = None,
    ):
        self.registration = registration
        self.config = config
        self._root = root
        self._state = state
        self.address = address
        self.ttrpc_address = ttrpc_address
        self.events = events
        self.plugins = plugins
        self.daemon_config = daemon_config
        self._tasks = tasks
        self.meta = Meta(platforms=list(registration.platforms), capabilities=list(registration.capabilities))
        self.started = time.monotonic()

    @property
    def root(self) -> str:
        """`<root>/<type>.<id>`, created 0700 the first time it is asked for."""
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        return self._root

    @property
    def state(self) -> str:
        os.makedirs(self._state, mode=0o700, exist_ok=True)
        return self._state

    def get(self, type_: str, id_: str | None = None) -> Any:
        return self.plugins.get(type_, id_)

    def spawn(self, name: str, coro: Any) -> Any:
        """Run `coro` as a long-lived background task the daemon owns: it
        is cancelled when the daemon stops (newest first), before plugins
        close. Returns the asyncio.Task."""
        if self._tasks is None:  # a context made outside a daemon
            import asyncio

            return asyncio.get_running_loop().create_task(coro, name=name)
        return self._tasks.spawn(f"{self.registration.uri}/{name}", coro)

    def get_all(self, type_: str) -> dict[str, Any]:
        return self.plugins.get_all(type_)
