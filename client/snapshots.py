"""The Snapshots API from the client side: one snapshotter by name.

An empty snapshotter name is sent as is, so the daemon picks its default
(pycontainerd: the namespace label containerd.io/defaults/snapshotter, else
the snapshots service's configured default). Errors come back as errdefs
classes, as everywhere in the client.
"""

from __future__ import annotations

from typing import Any, Iterator

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.pkg import errgrpc
from pycontainerd.pkg.mount import Mount, mounts_from_pb
from pycontainerd.pkg.snapshots import Info, info_from_pb

class Snapshots:
    def __init__(self, client: Any, snapshotter: str = "", lease: str = ""):
        self.client = client
        self.snapshotter = snapshotter
        self.lease = lease  # held by what this client prepares and views
        self.stub = pb_grpc.SnapshotsStub(client.channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return self.client._call(method, request, lease=self.lease)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        r = self._call(self.stub.Prepare, pb.PrepareSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return mounts_from_pb(r.mounts)

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        r = self._call(self.stub.View, pb.ViewSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return mounts_from_pb(r.mounts)

    def mounts(self, key: str) -> list[Mount]:
        r = self._call(self.stub.Mounts, pb.MountsRequest(snapshotter=self.snapshotter, key=key))
        return mounts_from_pb(r.mounts)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        self._call(self.stub.Commit, pb.CommitSnapshotRequest(
            snapshotter=self.snapshotter, name=name, key=key, labels=labels or {}))

    def remove(self, key: str) -> None:
        self._call(self.stub.Remove, pb.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key))

    def stat(self, key: str) -> Info:
        r = self._call(self.stub.Stat, pb.StatSnapshotRequest(snapshotter=self.snapshotter, key=key))
        return info_from_pb(r.info)

    def update(self, key: str, labels: dict[str, str], paths: list[str]) -> Info:
        r = self._call(self.stub.Update, pb.UpdateSnapshotRequest(
            snapshotter=self.snapshotter, info=pb.Info(name=key, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=paths)))
        return info_from_pb(r.info)

    def usage(self, key: str) -> tuple[int, int]:
        """(size in bytes, inodes)."""
        r = self._call(self.stub.Usage, pb.UsageRequest(snapshotter=self.snapshotter, key=key))
        return r.size, r.inodes

    def cleanup(self) -> None:
        self._call(self.stub.Cleanup, pb.CleanupRequest(snapshotter=self.snapshotter))

    def list(self, *filters: str) -> Iterator[Info]:
        stream = self.stub.List(pb.ListSnapshotsRequest(snapshotter=self.snapshotter, filters=list(filters)),
                                metadata=self.client.leased_metadata(self.lease), timeout=self.client.timeout)
        try:
            for r in stream:
                for i in r.info:
                    yield info_from_pb(i)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None
