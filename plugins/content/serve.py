"""`pycontainerd content serve`: a raw local content store, standalone,
over containerd.services.content.v1.Content on a UNIX socket.

This is what `[proxy_plugins.<name>] type = "content"` talks to, in
containerd or in pycontainerd:

    pycontainerd content serve --address /run/pycontent.sock --root /var/lib/pycontent

Like containerd's contentserver over content/local, the store has no
namespaces and no metadata: the daemon using it keeps those, and names its
ingests with refs that are already unique per namespace. The namespace
header and leases are ignored. Labels (given at commit, changed by Update)
are kept in a label store beside the blobs (plugins/content/labels.py), as
containerd's local store keeps them when it is given one; ours persists.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import structlog

from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.core import filters
from pycontainerd.core.service import serve_standalone
from pycontainerd.pkg import errdefs
from pycontainerd.plugins.services.content import Service

from pycontainerd.pkg.content import Info, Status, adapt_info

from .labels import FileLabelStore
from .local import LocalStore

log = structlog.get_logger(__name__)


class RawStore:
    """The local store behind the namespaced interface the content service
    speaks: no namespaces, no leases; labels in a FileLabelStore, with
    containerd's local-store semantics for Update."""

    def __init__(self, store: LocalStore, labels: FileLabelStore | None = None):
        self.store = store
        self.labels = labels if labels is not None else FileLabelStore(store.root)

    async def info(self, ns: str, dgst: str) -> Info:
        info = await self.store.info(dgst)
        info.labels = await asyncio.to_thread(self.labels.get, dgst)
        return info

    async def update(self, ns: str, info: Info, paths: list[str]) -> Info:
        return await asyncio.to_thread(self._update_sync, info, list(paths))

    def _update_sync(self, info: Info, paths: list[str]) -> Info:
        dgst = info.digest
        current = self.store._info_sync(dgst)  # NotFound "content <dgst>" when missing
        replace = not paths
        changes: dict[str, str] = {}
        for path in paths:
            if path.startswith("labels."):
                key = path[len("labels."):]
                changes[key] = info.labels.get(key, "")
            elif path == "labels":
                replace = True
            else:
                raise errdefs.InvalidArgument(
                    f"cannot update {errdefs.quote(path)} field on content info {errdefs.go_quote(dgst)}")
        if replace:
            labels = {k: v for k, v in info.labels.items() if v}
            labels.update({k: v for k, v in changes.items() if v})
            self.labels.set(dgst, labels)
        else:
            labels = self.labels.update(dgst, changes)
        # the local store's updated time is the blob's atime
        now = time.time_ns()
        try:
            os.utime(self.store.blob_path(dgst), ns=(now, current.created_at))
        except OSError:
            log.warning("could not change the access time of a blob", digest=dgst)
        return Info(dgst, current.size, current.created_at, now, labels)

    async def list(self, ns: str, *filter_strings: str) -> list[Info]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def walk() -> list[Info]:
            out = []
            for info in self.store._walk_sync(filters.parse_all()):
                info.labels = self.labels.get(info.digest)
                if flt.match(adapt_info(info)):
                    out.append(info)
            return out

        return await filters.matching(flt, walk)

    async def reader_at(self, ns: str, dgst: str):
        return await self.store.reader_at(dgst)

    async def delete(self, ns: str, dgst: str, lease: str = "") -> None:
        await self.store.delete(dgst)
        await asyncio.to_thread(self.labels.delete, dgst)

    async def status(self, ns: str, ref: str) -> Status:
        return await self.store.status(ref)

    async def list_statuses(self, ns: str, *filters: str) -> list[Status]:
        return await self.store.list_statuses(*filters)

    async def abort(self, ns: str, ref: str, lease: str = "") -> None:
        await self.store.abort(ref)

    async def writer(self, ns: str, ref: str, total: int, expected: str, lease: str = ""):
        return _RawWriter(await self.store.writer(ref, total, expected), self.labels)


class _RawWriter:
    """A local writer whose commit records the labels it is given."""

    def __init__(self, writer, labels: FileLabelStore):
        self._writer = writer
        self._labels = labels

    def __getattr__(self, name: str):
        return getattr(self._writer, name)

    async def commit(self, size: int = 0, expected: str = "", labels=None) -> str:
        dgst = await self._writer.commit(size, expected)
        # set even when empty: labels left by an earlier blob of this digest go
        await asyncio.to_thread(self._labels.set, dgst, dict(labels or {}))
        return dgst


def raw_service(store: LocalStore) -> Service:
    """The same gRPC service the daemon serves, over the raw store, reading
    no namespace from requests."""
    raw = RawStore(store)
    return Service(SimpleNamespace(store=raw, delete=raw.delete), namespace_of=lambda context: "")


async def serve(address: str, root: str) -> None:
    store = await asyncio.to_thread(LocalStore, root)
    # open writers end with their streams; their ingests stay resumable
    await serve_standalone(
        address, lambda server: pb_grpc.add_ContentServicer_to_server(raw_service(store), server),
        f"content store (root {root})",
    )


def main(argv: list[str]) -> int:
    """`pycontainerd content serve` (plugins/builtins.py wires it)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="pycontainerd content serve",
                                description="serve a local content store over containerd's Content API")
    p.add_argument("--address", required=True, help="UNIX socket to serve on")
    p.add_argument("--root", required=True, help="the content store's root directory")
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.address, args.root))
    except OSError as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    return 0
