"""`pycontainerd snapshotter serve`: one snapshotter, standalone, over
containerd.services.snapshots.v1 on a UNIX socket.

This is what containerd's `[proxy_plugins.<name>] type = "snapshot"` talks
to, so a real containerd (or pycontainerd) can use a Python snapshotter:

    pycontainerd snapshotter serve --snapshotter overlayfs --address /run/pysn.sock --root /var/lib/pysn

The keys are the snapshotter's own (containerd's metadata layer already
makes them unique per namespace), so the namespace header and the
snapshotter name in requests are ignored. Blocking snapshotter work runs in
a thread.
"""

from __future__ import annotations

import asyncio
import os

from google.protobuf import empty_pb2

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.core.service import serve_standalone

from pycontainerd.pkg.mount import mounts_to_pb
from pycontainerd.pkg.snapshots import Info, info_to_pb

SNAPSHOTTERS = ("overlayfs", "native", "btrfs")


def make_snapshotter(name: str, root: str):
    """The snapshotter `name` rooted at `root`, checked the way its plugin
    checks (SkipPlugin raised when this root cannot host it)."""
    from pycontainerd.core.context import SkipPlugin

    os.makedirs(root, mode=0o700, exist_ok=True)
    if name == "native":
        from .native import NativeSnapshotter

        return NativeSnapshotter(root)
    if name == "overlayfs":
        from .overlayfs import OverlaySnapshotter, check_supported

        try:
            check_supported(root)
        except OSError as exc:
            raise SkipPlugin(f"overlayfs unable to be used on {root}: {exc}") from None
        return OverlaySnapshotter(root)
    if name == "btrfs":
        from .btrfs import BtrfsSnapshotter, mount_of

        _, fstype, source = mount_of(root)
        if fstype != "btrfs":
            raise SkipPlugin(f"path {root} ({fstype}) must be a btrfs filesystem to be used with the btrfs snapshotter")
        return BtrfsSnapshotter(root, source)
    raise ValueError(f"unknown snapshotter {name!r} (one of {', '.join(SNAPSHOTTERS)})")


class BackendService(pb_grpc.SnapshotsServicer):
    """The Snapshots API straight over one snapshotter."""

    def __init__(self, backend):
        self.b = backend

    async def _run(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def Prepare(self, request, context):

        ms = await self._run(self.b.prepare, request.key, request.parent, dict(request.labels))
        return pb.PrepareSnapshotResponse(mounts=mounts_to_pb(ms))

    async def View(self, request, context):

        ms = await self._run(self.b.view, request.key, request.parent, dict(request.labels))
        return pb.ViewSnapshotResponse(mounts=mounts_to_pb(ms))

    async def Mounts(self, request, context):

        return pb.MountsResponse(mounts=mounts_to_pb(await self._run(self.b.mounts, request.key)))

    async def Commit(self, request, context):
        await self._run(self.b.commit, request.name, request.key, dict(request.labels))
        return empty_pb2.Empty()

    async def Remove(self, request, context):
        await self._run(self.b.remove, request.key)
        return empty_pb2.Empty()

    async def Stat(self, request, context):

        return pb.StatSnapshotResponse(info=info_to_pb(await self._run(self.b.stat, request.key)))

    async def Update(self, request, context):

        info = Info(name=request.info.name, labels=dict(request.info.labels))
        updated = await self._run(self.b.update, info, list(request.update_mask.paths))
        return pb.UpdateSnapshotResponse(info=info_to_pb(updated))

    async def List(self, request, context):

        infos = await self._run(self.b.walk, *request.filters)
        for i in range(0, len(infos), 100):
            yield pb.ListSnapshotsResponse(info=[info_to_pb(x) for x in infos[i:i + 100]])

    async def Usage(self, request, context):
        u = await self._run(self.b.usage, request.key)
        return pb.UsageResponse(size=u.size, inodes=u.inodes)

    async def Cleanup(self, request, context):
        await self._run(self.b.cleanup)
        return empty_pb2.Empty()


async def serve(snapshotter: str, address: str, root: str) -> None:
    backend = await asyncio.to_thread(make_snapshotter, snapshotter, root)
    try:
        await serve_standalone(
            address, lambda server: pb_grpc.add_SnapshotsServicer_to_server(BackendService(backend), server),
            f"snapshotter {snapshotter} (root {root})",
        )
    finally:
        backend.close()


def main(argv: list[str]) -> int:
    """`pycontainerd snapshotter serve` (plugins/builtins.py wires it)."""
    import argparse
    import sys

    from pycontainerd.core.context import SkipPlugin

    p = argparse.ArgumentParser(prog="pycontainerd snapshotter serve",
                                description="serve a snapshotter over containerd's Snapshots API")
    p.add_argument("--snapshotter", required=True, help="overlayfs, native or btrfs")
    p.add_argument("--address", required=True, help="UNIX socket to serve on")
    p.add_argument("--root", required=True, help="the snapshotter's root directory")
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.snapshotter, args.address, args.root))
    except (SkipPlugin, ValueError) as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    return 0
