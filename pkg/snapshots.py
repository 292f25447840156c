"""The snapshotter contract (containerd's snapshots package): kinds, the
types a snapshotter hands out, and the methods a plugin of type
io.containerd.snapshotter.v1 must have.

Concurrency: a snapshotter's methods are plain blocking functions. Callers
never run them on the event loop: the metadata layer calls them on its
database thread (inside its transaction, so both stores change together)
and everyone else through a worker thread (asyncio.to_thread). A remote
snapshotter's client blocks the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from .mount import Mount

if TYPE_CHECKING:
    from pycontainerd.core import filters

__all__ = ["KIND_UNKNOWN", "KIND_VIEW", "KIND_ACTIVE", "KIND_COMMITTED", "KIND_NAMES", "parse_kind",
           "Info", "Usage", "Mount", "Snapshotter", "Cleaner", "SNAPSHOTTER_METHODS", "adapt_info",
           "info_from_pb", "info_to_pb"]

# containerd's snapshots.Kind values (and the API's enum)
KIND_UNKNOWN, KIND_VIEW, KIND_ACTIVE, KIND_COMMITTED = 0, 1, 2, 3
KIND_NAMES = {KIND_UNKNOWN: "Unknown", KIND_VIEW: "View", KIND_ACTIVE: "Active", KIND_COMMITTED: "Committed"}

# what the daemon checks on an io.containerd.snapshotter.v1 instance;
# `cleanup` (Cleaner) and `close` are optional
SNAPSHOTTER_METHODS = ("stat", "update", "usage", "mounts", "prepare", "view", "commit", "remove", "walk")


def parse_kind(s: str) -> int:
    return {"view": KIND_VIEW, "active": KIND_ACTIVE, "committed": KIND_COMMITTED}.get(s.lower(), KIND_UNKNOWN)


@dataclass
class Info:
    """snapshots.Info: created/updated are nanoseconds since the epoch."""

    name: str
    kind: int = KIND_UNKNOWN
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: int = 0
    updated: int = 0


@dataclass
class Usage:
    """Disk usage of a snapshot: bytes and inodes."""

    size: int = 0
    inodes: int = 0


class Snapshotter(Protocol):
    """containerd's snapshots.Snapshotter, keys flat (the metadata layer
    namespaces them). Errors are pkg.errdefs classes."""

    def stat(self, key: str) -> Info: ...

    def update(self, info: Info, fieldpaths: Iterable[str] = ()) -> Info: ...

    def usage(self, key: str) -> Usage: ...

    def mounts(self, key: str) -> list[Mount]: ...

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]: ...

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]: ...

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None: ...

    def remove(self, key: str) -> None: ...

    def walk(self, *filter_strings: str) -> list[Info]: ...


class Cleaner(Protocol):
    """Optional: removes what no snapshot record names (crash leftovers);
    garbage collection calls it after pruning."""

    def cleanup(self) -> None: ...


def info_from_pb(p: Any) -> Info:
    """An Info from a containerd.services.snapshots.v1.Info message."""
    from .timestamps import from_pb

    return Info(name=p.name, kind=p.kind, parent=p.parent, labels=dict(p.labels),
                created=from_pb(p.created_at), updated=from_pb(p.updated_at))


def info_to_pb(info: Info) -> Any:
    """The containerd.services.snapshots.v1.Info message of `info`."""
    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2

    from .timestamps import to_pb

    return snapshots_pb2.Info(name=info.name, parent=info.parent, kind=info.kind, created_at=to_pb(info.created),
                              updated_at=to_pb(info.updated), labels=info.labels)


def adapt_info(info: Info) -> filters.Adaptor:
    """containerd's adaptSnapshot: name, parent, kind (lower case), labels."""
    from pycontainerd.core.filters import adapt_mapping  # the filter grammar is the daemon's

    kind = KIND_NAMES.get(info.kind, "Unknown").lower()
    return adapt_mapping(
        {"name": info.name, "parent": info.parent, "kind": None if kind == "unknown" else kind, "labels": info.labels},
        empty_is_absent=False,
    )
