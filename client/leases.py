"""The Leases API from the client side (containerd's leases/proxy manager).

A lease keeps what it holds (content, ingests, snapshots) from the garbage
collector. Create sends the id and labels as given; an empty id lets the
server pick one. Errors come back as errdefs classes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, timestamps
from pycontainerd.pkg.leases import LABEL_EXPIRE, Lease, random_id

from .client import _errors


def _lease(p: Any) -> Lease:
    return Lease(p.id, timestamps.from_pb(p.created_at), dict(p.labels))


class Leases:
    def __init__(self, client: Any):
        self.client = client
        self.stub = pb_grpc.LeasesStub(client.channel)

    @_errors
    def create(self, lease_id: str = "", labels: dict[str, str] | None = None) -> Lease:
        r = self.client._call(self.stub.Create, pb.CreateRequest(id=lease_id, labels=labels or {}))
        return _lease(r.lease)

    @_errors
    def delete(self, lease_id: str, sync: bool = False) -> None:
        self.client._call(self.stub.Delete, pb.DeleteRequest(id=lease_id, sync=sync))

    @_errors
    def list(self, *filters: str) -> list[Lease]:
        r = self.client._call(self.stub.List, pb.ListRequest(filters=list(filters)))
        return [_lease(p) for p in r.leases]

    @_errors
    def add_resource(self, lease_id: str, resource_type: str, resource_id: str) -> None:
        resource = pb.Resource(id=resource_id, type=resource_type)
        self.client._call(self.stub.AddResource, pb.AddResourceRequest(id=lease_id, resource=resource))

    @_errors
    def delete_resource(self, lease_id: str, resource_type: str, resource_id: str) -> None:
        resource = pb.Resource(id=resource_id, type=resource_type)
        self.client._call(self.stub.DeleteResource, pb.DeleteResourceRequest(id=lease_id, resource=resource))

    @_errors
    def list_resources(self, lease_id: str) -> list[tuple[str, str]]:
        """(type, id) of every resource the lease holds."""
        r = self.client._call(self.stub.ListResources, pb.ListResourcesRequest(id=lease_id))
        return [(x.type, x.id) for x in r.resources]


class TemporaryLease:
    """`with TemporaryLease(client) as lease_id:` a lease expiring in 24
    hours, deleted on exit (ctr's WithLease), so what a command writes
    cannot be collected before the image record holds it."""

    def __init__(self, client: Any):
        self.leases = Leases(client)
        self.id = ""

    def __enter__(self) -> str:
        expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.id = self.leases.create(random_id(), {LABEL_EXPIRE: expire}).id
        return self.id

    def __exit__(self, *exc: Any) -> None:
        try:
            self.leases.delete(self.id)
        except errdefs.ContainerdError:
            pass  # it expires on its own
