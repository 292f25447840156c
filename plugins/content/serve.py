"""`pycontainerd content serve`: a raw local content store, standalone,
over containerd.services.content.v1.Content on a UNIX socket.

This is what `[proxy_plugins.<name>] type = "content"` talks to, in
containerd or in pycontainerd:

    pycontainerd content serve --address /run/pycontent.sock --root /var/lib/pycontent

Like containerd's contentserver over content/local, the store has no
namespaces and no metadata: the daemon using it keeps those, and names its
ingests with refs that are already unique per namespace. The namespace
header and leases are ignored. The store has no label store either, so
Update is refused (containerd's wording) and blobs carry no labels.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.core.service import serve_standalone
from pycontainerd.pkg import errdefs
from pycontainerd.plugins.services.content import Service

from pycontainerd.pkg.content import Info, Status

from .local import LocalStore


class RawStore:
    """The local store behind the namespaced interface the content service
    speaks: no namespaces, no leases, no labels (Update is refused with
    containerd's wording, a commit's labels are dropped)."""

    def __init__(self, store: LocalStore):
        self.store = store

    async def info(self, ns: str, dgst: str) -> Info:
        return await self.store.info(dgst)

    async def update(self, ns: str, info: Info, paths: list[str]) -> Info:
        raise errdefs.FailedPrecondition("update not supported on immutable content store")

    async def list(self, ns: str, *filters: str) -> list[Info]:
        return await self.store.walk(*filters)

    async def reader_at(self, ns: str, dgst: str):
        return await self.store.reader_at(dgst)

    async def delete(self, ns: str, dgst: str, lease: str = "") -> None:
        await self.store.delete(dgst)

    async def status(self, ns: str, ref: str) -> Status:
        return await self.store.status(ref)

    async def list_statuses(self, ns: str, *filters: str) -> list[Status]:
        return await self.store.list_statuses(*filters)

    async def abort(self, ns: str, ref: str, lease: str = "") -> None:
        await self.store.abort(ref)

    async def writer(self, ns: str, ref: str, total: int, expected: str, lease: str = ""):
        return _RawWriter(await self.store.writer(ref, total, expected))


class _RawWriter:
    """A local writer whose commit takes (and drops) labels."""

    def __init__(self, writer):
        self._writer = writer

    def __getattr__(self, name: str):
        return getattr(self._writer, name)

    async def commit(self, size: int = 0, expected: str = "", labels=None) -> str:
        return await self._writer.commit(size, expected)


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
