"""The content store contract (containerd's content package): the types a
store hands out, the filter adaptors over them, and the methods a plugin of
type io.containerd.content.v1 must have.

Concurrency: a store's methods are coroutines, called on the daemon's
event loop; a store does its blocking file or network work in threads
itself. A Writer and a ReaderAt are the same (`read_at_sync`/`write_sync`
are for callers that already run on a worker thread, such as the differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .timestamps import from_pb

if TYPE_CHECKING:
    from pycontainerd.core import filters

# what the daemon checks on an io.containerd.content.v1 instance
STORE_METHODS = ("info", "update", "walk", "delete", "reader_at", "status", "list_statuses", "abort", "writer")


@dataclass
class Info:
    """A committed blob: digest, size, times, labels."""

    digest: str
    size: int
    created_at: int = 0  # ns since the epoch
    updated_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Status:
    """An ingest in progress, as `ctr content active` lists it."""

    ref: str
    offset: int = 0
    total: int = 0
    expected: str = ""
    started_at: int = 0
    updated_at: int = 0


def info_from_pb(p: Any) -> Info:
    """An Info from a containerd.services.content.v1.Info message."""
    return Info(p.digest, p.size, from_pb(p.created_at), from_pb(p.updated_at), dict(p.labels))


def status_from_pb(p: Any) -> Status:
    """A Status from a containerd.services.content.v1.Status message."""
    return Status(ref=p.ref, offset=p.offset, total=p.total, expected=p.expected,
                  started_at=from_pb(p.started_at), updated_at=from_pb(p.updated_at))


class ReaderAt(Protocol):
    """Positioned reads of one blob."""

    size: int

    async def read_at(self, offset: int, n: int) -> bytes: ...

    def read_at_sync(self, offset: int, n: int) -> bytes: ...

    def close(self) -> None: ...


class Writer(Protocol):
    """One ingest, held until commit or close; a closed one stays resumable."""

    def status(self) -> Status: ...

    def digest(self) -> str: ...

    async def write(self, data: bytes) -> int: ...

    def write_sync(self, data: bytes) -> int: ...

    async def truncate(self, size: int) -> None: ...

    async def commit(self, size: int = 0, expected: str = "") -> str: ...

    async def close(self) -> None: ...


class Store(Protocol):
    """A content-addressable store with no namespaces (the metadata layer
    adds those). Errors are pkg.errdefs classes."""

    async def info(self, dgst: str) -> Info: ...

    async def update(self, info: Info, paths: list[str] | tuple[str, ...] = ()) -> Info: ...

    async def walk(self, *filter_strings: str) -> list[Info]: ...

    async def delete(self, dgst: str) -> None: ...

    async def reader_at(self, dgst: str) -> ReaderAt: ...

    async def status(self, ref: str) -> Status: ...

    async def list_statuses(self, *filter_strings: str) -> list[Status]: ...

    async def abort(self, ref: str) -> None: ...

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer: ...


def adapt_info(info: Info) -> filters.Adaptor:
    """containerd's content.AdaptInfo, plus `size` (decimal bytes), which
    containerd 1.6 leaves as a TODO (there it never matches)."""

    def field_(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "digest":
            return info.digest, True
        if head == "size":
            return str(info.size), True
        if head == "labels":
            if not info.labels:
                return "", False
            key = ".".join(path[1:])
            return (info.labels[key], True) if key in info.labels else ("", False)
        return "", False

    return field_


def adapt_status(st: Status) -> filters.Adaptor:
    def field_(path: list[str]) -> tuple[str, bool]:
        if path and path[0] == "ref":
            return st.ref, True
        return "", False

    return field_
