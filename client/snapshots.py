"""The Snapshots API from the client side: one snapshotter by name.

An empty snapshotter name is sent as is, so the daemon picks its default
(pycontainerd: the namespace label containerd.io/defaults/snapshotter, else
the snapshots service's configured default). Errors come back as errdefs
classes, as everywhere in the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.pkg import errgrpc, timestamps

KINDS = {0: "Unknown", 1: "View", 2: "Active", 3: "Committed"}


@dataclass
class SnapshotInfo:
    name: str
    parent: str
    kind: str  # "Active", "View", "Committed"
    labels: dict[str, str] = field(default_factory=dict)
    created: tuple[int, int] = (0, 0)  # (seconds, nanos) since the epoch, UTC
    updated: tuple[int, int] = (0, 0)


@dataclass
class MountInfo:
    type: str
    source: str
    options: list[str]


def _info(p: Any) -> SnapshotInfo:
    return SnapshotInfo(p.name, p.parent, KINDS.get(p.kind, "Unknown"), dict(p.labels),
                        (p.created_at.seconds, p.created_at.nanos), (p.updated_at.seconds, p.updated_at.nanos))


def _mounts(ms: Any) -> list[MountInfo]:
    return [MountInfo(m.type, m.source, list(m.options)) for m in ms]


class Snapshots:
    def __init__(self, client: Any, snapshotter: str = ""):
        self.client = client
        self.snapshotter = snapshotter
        self.stub = pb_grpc.SnapshotsStub(client.channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return self.client._call(method, request)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[MountInfo]:
        r = self._call(self.stub.Prepare, pb.PrepareSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return _mounts(r.mounts)

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[MountInfo]:
        r = self._call(self.stub.View, pb.ViewSnapshotRequest(
            snapshotter=self.snapshotter, key=key, parent=parent, labels=labels or {}))
        return _mounts(r.mounts)

    def mounts(self, key: str) -> list[MountInfo]:
        r = self._call(self.stub.Mounts, pb.MountsRequest(snapshotter=self.snapshotter, key=key))
        return _mounts(r.mounts)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        self._call(self.stub.Commit, pb.CommitSnapshotRequest(
            snapshotter=self.snapshotter, name=name, key=key, labels=labels or {}))

    def remove(self, key: str) -> None:
        self._call(self.stub.Remove, pb.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key))

    def stat(self, key: str) -> SnapshotInfo:
        r = self._call(self.stub.Stat, pb.StatSnapshotRequest(snapshotter=self.snapshotter, key=key))
        return _info(r.info)

    def update(self, key: str, labels: dict[str, str], paths: list[str]) -> SnapshotInfo:
        r = self._call(self.stub.Update, pb.UpdateSnapshotRequest(
            snapshotter=self.snapshotter, info=pb.Info(name=key, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=paths)))
        return _info(r.info)

    def usage(self, key: str) -> tuple[int, int]:
        """(size in bytes, inodes)."""
        r = self._call(self.stub.Usage, pb.UsageRequest(snapshotter=self.snapshotter, key=key))
        return r.size, r.inodes

    def cleanup(self) -> None:
        self._call(self.stub.Cleanup, pb.CleanupRequest(snapshotter=self.snapshotter))

    def list(self, *filters: str) -> Iterator[SnapshotInfo]:
        stream = self.stub.List(pb.ListSnapshotsRequest(snapshotter=self.snapshotter, filters=list(filters)),
                                metadata=self.client._metadata, timeout=self.client.timeout)
        try:
            for r in stream:
                for i in r.info:
                    yield _info(i)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None


def go_time(sec_nanos: tuple[int, int]) -> str:
    """Go's time.Time JSON form (RFC 3339 with up to 9 fractional digits,
    trailing zeros dropped), in UTC."""
    sec, nanos = sec_nanos
    return timestamps.format_rfc3339nano(sec * timestamps.NS_PER_SECOND + nanos)
