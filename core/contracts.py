"""What an instance of each plugin type must offer, checked as it is loaded.

The contracts themselves live in pkg/ (the Snapshotter and content Store
protocols, the differ's Applier and Comparer); the daemon only holds each
type to its list of methods, so a plugin that lacks one is an `error` row
naming what it lacks instead of an `ok` row its consumers cannot use. A
plain callable check: cheap at start, and enough to catch an incomplete
implementation (signatures are the protocol's documentation).
"""

from __future__ import annotations

import functools
from typing import Any

from .registry import PluginType


@functools.cache
def contracts() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Plugin type -> (the contract's name, the methods it requires). Built
    on first use, so commands that load no plugin (`pycontainerd publish`,
    run by shims for every event) do not import the contracts."""
    from pycontainerd.pkg.content import STORE_METHODS
    from pycontainerd.pkg.diff import DIFFER_METHODS
    from pycontainerd.pkg.monitor import MONITOR_METHODS
    from pycontainerd.pkg.runtime import RUNTIME_METHODS
    from pycontainerd.pkg.snapshots import SNAPSHOTTER_METHODS

    return {
        PluginType.SNAPSHOT: ("snapshotter (pycontainerd.pkg.snapshots.Snapshotter)", SNAPSHOTTER_METHODS),
        PluginType.CONTENT: ("content store (pycontainerd.pkg.content.Store)", STORE_METHODS),
        PluginType.DIFF: ("differ (pycontainerd.pkg.diff.Applier and Comparer)", DIFFER_METHODS),
        PluginType.GRPC: ("gRPC service", ("register",)),
        PluginType.RUNTIME: ("runtime (pycontainerd.pkg.runtime.PlatformRuntime)", RUNTIME_METHODS),
        PluginType.RUNTIME_V2: ("runtime (pycontainerd.pkg.runtime.PlatformRuntime)", RUNTIME_METHODS),
        PluginType.TASK_MONITOR: ("task monitor (pycontainerd.pkg.monitor.TaskMonitor)", MONITOR_METHODS),
    }


class ContractError(Exception):
    """A plugin's instance lacks methods its type requires."""


def check(plugin_type: str, instance: Any) -> None:
    """Raise ContractError naming the missing methods, if any."""
    contract = contracts().get(plugin_type)
    if contract is None:
        return
    name, methods = contract
    missing = [m for m in methods if not callable(getattr(instance, m, None))]
    if missing:
        raise ContractError(f"not a {name}: missing {', '.join(missing)}")
