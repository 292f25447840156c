"""A remote snapshotter (`[proxy_plugins.<name>] type = "snapshot"`) seen
through the snapshotter contract (pkg/snapshots.py) the local ones offer,
so the metadata layer, the services and GC use it unchanged.

`new_client` is the proxy plugin's instance (plugins/builtins.py names it
for the core): a blocking gRPC client of containerd.services.snapshots.v1
on the remote socket, blocking like every snapshotter (calls come from the
metadata database thread, inside its transaction, as with containerd's
proxy snapshotter, or from a worker thread). Requests name the snapshotter by the
proxy's name, as containerd's proxy does; remote errors come back as the
errdefs class their gRPC code says.
"""

from __future__ import annotations

from typing import Any, Iterable

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, errgrpc
from pycontainerd.pkg.mount import mounts_from_pb
from pycontainerd.pkg.snapshots import Info, Mount, Usage, info_from_pb


class ProxySnapshotter:
    remote = True  # keeps its own house: no crash recovery from this daemon

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = address
        target = address if address.startswith("unix:") else "unix:" + address
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.SnapshotsStub(self.channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    def stat(self, key: str) -> Info:
        return info_from_pb(self._call(self.stub.Stat, pb.StatSnapshotRequest(snapshotter=self.name, key=key)).info)

    def update(self, info: Info, fieldpaths: Iterable[str] = ()) -> Info:
        r = self._call(self.stub.Update, pb.UpdateSnapshotRequest(
            snapshotter=self.name, info=pb.Info(name=info.name, labels=info.labels),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths))))
        return info_from_pb(r.info)

    def usage(self, key: str) -> Usage:
        r = self._call(self.stub.Usage, pb.UsageRequest(snapshotter=self.name, key=key))
        return Usage(size=r.size, inodes=r.inodes)

    def mounts(self, key: str) -> list[Mount]:
        return mounts_from_pb(self._call(self.stub.Mounts, pb.MountsRequest(snapshotter=self.name, key=key)).mounts)

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        r = self._call(self.stub.Prepare, pb.PrepareSnapshotRequest(
            snapshotter=self.name, key=key, parent=parent, labels=labels or {}))
        return mounts_from_pb(r.mounts)

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        r = self._call(self.stub.View, pb.ViewSnapshotRequest(
            snapshotter=self.name, key=key, parent=parent, labels=labels or {}))
        return mounts_from_pb(r.mounts)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        self._call(self.stub.Commit, pb.CommitSnapshotRequest(
            snapshotter=self.name, name=name, key=key, labels=labels or {}))

    def remove(self, key: str) -> None:
        self._call(self.stub.Remove, pb.RemoveSnapshotRequest(snapshotter=self.name, key=key))

    def walk(self, *filter_strings: str) -> list[Info]:
        try:
            stream = self.stub.List(pb.ListSnapshotsRequest(snapshotter=self.name, filters=list(filter_strings)))
            return [info_from_pb(i) for r in stream for i in r.info]
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    def cleanup(self) -> None:
        try:
            self._call(self.stub.Cleanup, pb.CleanupRequest(snapshotter=self.name))
        except errdefs.NotImplementedErr:
            pass

    def close(self) -> None:
        self.channel.close()


def new_client(name: str, address: str) -> ProxySnapshotter:
    """The instance of a `type = "snapshot"` proxy plugin."""
    return ProxySnapshotter(name, address)
