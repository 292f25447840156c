"""The Diff API from the client side, and the flow behind ctr's
`snapshots diff` (cmd/ctr/commands/snapshots + rootfs.CreateDiff), so
pyctr can offer the same command.

Everything the flow creates (the temporary views, the layer written into
the content store) is done under a lease, as containerd's client.WithLease
does: a random id expiring in 24 hours, deleted when the command ends, so
the garbage collector cannot take a view in the middle of the diff.
`keep` labels the layer `containerd.io/gc.root` so it outlives the lease.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import grpc

from pycontainerd.api.services.diff.v1 import diff_pb2 as pb
from pycontainerd.api.services.diff.v1 import diff_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, errgrpc, snapshots
from pycontainerd.pkg.mount import mounts_to_pb
from pycontainerd.pkg.oci import descriptor
from pycontainerd.pkg.oci.descriptor import Descriptor

from .snapshots import Snapshots

MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Diff:
    def __init__(self, client: Any, lease: str = ""):
        self.client = client
        self.lease = lease
        self.stub = pb_grpc.DiffStub(client.channel)

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self.client.leased_metadata(self.lease)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self.client.timeout)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    def apply(self, desc: Descriptor, mounts: Any) -> Descriptor:
        req = pb.ApplyRequest(diff=descriptor.to_pb(desc),
                              mounts=mounts_to_pb(mounts))
        return descriptor.from_pb(self._call(self.stub.Apply, req).applied)

    def compare(self, left: Any, right: Any, media_type: str = "", ref: str = "",
                labels: dict[str, str] | None = None) -> Descriptor:
        req = pb.DiffRequest(left=mounts_to_pb(left), right=mounts_to_pb(right), media_type=media_type, ref=ref,
                             labels=labels or {})
        return descriptor.from_pb(self._call(self.stub.Diff, req).diff)


def _unique_part() -> str:
    """rootfs' uniquePart: time plus a little randomness."""
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _mounts_of(sn: Snapshots, key: str, view_key: str, cleanup: list[str]) -> list[Any]:
    """An active snapshot's own mounts, else a temporary view of it."""
    if sn.stat(key).kind == snapshots.KIND_ACTIVE:
        return sn.mounts(key)
    mounts = sn.view(view_key, key)
    cleanup.append(view_key)
    return mounts


def snapshots_diff(client: Any, snapshotter: str, id_a: str, id_b: str = "",
                   media_type: str = MEDIA_TYPE_LAYER_GZIP, ref: str = "",
                   labels: dict[str, str] | None = None, keep: bool = False) -> Iterator[bytes]:
    """ctr's `snapshots diff`: the layer between `id_a` and its parent (or
    `id_b`), written to the content store, yielded as the blob's bytes."""
    from .content import ContentClient
    from pycontainerd.pkg.leases import LABEL_EXPIRE

    from .leases import Leases

    if not id_a:
        raise errdefs.InvalidArgument("snapshot id must be provided")
    labels = dict(labels or {})
    if keep:
        labels["containerd.io/gc.root"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    leases = Leases(client)
    expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lease = leases.create(base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
                          {LABEL_EXPIRE: expire}).id
    try:
        sn = Snapshots(client, snapshotter, lease)
        differ = Diff(client, lease)
        cleanup: list[str] = []
        try:
            if not id_b:
                info = sn.stat(id_a)
                lower_key = f"{info.parent}-parent-view-{_unique_part()}"
                lower = sn.view(lower_key, info.parent)
                cleanup.append(lower_key)
                upper = _mounts_of(sn, id_a, f"{id_a}-view-{_unique_part()}", cleanup)
            else:
                lower = _mounts_of(sn, id_a, f"{id_a}-view-key", cleanup)
                upper = _mounts_of(sn, id_b, f"{id_b}-view-key", cleanup)
            desc = differ.compare(lower, upper, media_type, ref, labels)
        finally:
            for key in reversed(cleanup):
                try:
                    sn.remove(key)
                except errdefs.ContainerdError:
                    pass  # best effort, as containerd's deferred Remove
        yield from ContentClient(client, lease).read(desc.digest)
    finally:
        try:
            leases.delete(lease)
        except errdefs.ContainerdError:
            pass
