"""The snapshots service: every snapshotter, namespaced, over gRPC.

`io.containerd.service.v1.snapshots-service` serves the namespaced view of
each loaded snapshotter the metadata plugin hands out
(plugins/metadata/snapshots.py), publishes
`/snapshot/prepare|commit|remove`, and picks the snapshotter a request
names. A request with an empty name gets the namespace's default (its label
`containerd.io/defaults/snapshotter`) or else the service's configured
`default` ("overlayfs"), so swapping the default snapshotter is a
config.toml edit:

    [plugins."io.containerd.service.v1.snapshots-service"]
      default = "native"

Proxy snapshotters (`[proxy_plugins.<name>] type = "snapshot"`) are among
them: their plugin's instance is a client of their socket
(plugins/snapshotters/proxy.py).

`io.containerd.grpc.v1.snapshots` serves containerd.services.snapshots.v1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import structlog
from google.protobuf import empty_pb2

from pycontainerd.api.events import snapshot_pb2 as events_pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import lease_of, namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.mount import Mount, mounts_to_pb
from pycontainerd.pkg.snapshots import Info, info_to_pb
from pycontainerd.plugins.metadata.snapshots import NamespacedSnapshotter

log = structlog.get_logger(__name__)

SERVICE_ID = "snapshots-service"
DEFAULT_LABEL = "containerd.io/defaults/snapshotter"


@dataclass
class Config:
    """[plugins."io.containerd.service.v1.snapshots-service"]."""

    # the snapshotter a request without a snapshotter name uses, unless its
    # namespace has the label containerd.io/defaults/snapshotter
    default: str = "overlayfs"


class Local:
    def __init__(self, db, events, snapshotters: dict[str, NamespacedSnapshotter], default: str):
        self.db = db
        self.events = events
        self.snapshotters = snapshotters
        self.default = default

    async def get(self, ns: str, name: str) -> NamespacedSnapshotter:
        if not name:
            name = await self._namespace_default(ns) or self.default
        sn = self.snapshotters.get(name)
        if sn is None:
            raise errdefs.InvalidArgument(f"snapshotter not loaded: {errdefs.cut(name)}")
        return sn

    async def _namespace_default(self, ns: str) -> str:
        def tx(conn) -> str:
            row = conn.execute(
                "SELECT value FROM labels WHERE namespace = ? AND kind = 'namespace' AND object = '' AND key = ?",
                (ns, DEFAULT_LABEL),
            ).fetchone()
            return row[0] if row else ""

        return await self.db.view(tx)

    async def prepare(self, ns, name, key, parent, labels, lease="") -> list[Mount]:
        sn = await self.get(ns, name)
        mounts = await sn.prepare(ns, key, parent, labels, lease)
        self.events.publish(ns, "/snapshot/prepare", events_pb.SnapshotPrepare(key=key, parent=parent))
        return mounts

    async def view(self, ns, name, key, parent, labels, lease="") -> list[Mount]:
        sn = await self.get(ns, name)
        return await sn.view(ns, key, parent, labels, lease)

    async def commit(self, ns, sname, name, key, labels, lease="") -> None:
        sn = await self.get(ns, sname)
        await sn.commit(ns, name, key, labels, lease)
        self.events.publish(ns, "/snapshot/commit", events_pb.SnapshotCommit(key=key, name=name))

    async def remove(self, ns, name, key, lease="") -> None:
        sn = await self.get(ns, name)
        await sn.remove(ns, key, lease)
        self.events.publish(ns, "/snapshot/remove", events_pb.SnapshotRemove(key=key))


class Service(pb_grpc.SnapshotsServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_SnapshotsServicer_to_server(self, server)

    async def Prepare(self, request, context):
        ns = namespace(context)
        mounts = await self.local.prepare(ns, request.snapshotter, request.key, request.parent,
                                          dict(request.labels), lease_of(context))
        return pb.PrepareSnapshotResponse(mounts=mounts_to_pb(mounts))

    async def View(self, request, context):
        ns = namespace(context)
        mounts = await self.local.view(ns, request.snapshotter, request.key, request.parent,
                                       dict(request.labels), lease_of(context))
        return pb.ViewSnapshotResponse(mounts=mounts_to_pb(mounts))

    async def Mounts(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        return pb.MountsResponse(mounts=mounts_to_pb(await sn.mounts(ns, request.key)))

    async def Commit(self, request, context):
        ns = namespace(context)
        await self.local.commit(ns, request.snapshotter, request.name, request.key, dict(request.labels),
                                lease_of(context))
        return empty_pb2.Empty()

    async def Remove(self, request, context):
        ns = namespace(context)
        await self.local.remove(ns, request.snapshotter, request.key, lease_of(context))
        return empty_pb2.Empty()

    async def Stat(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        return pb.StatSnapshotResponse(info=info_to_pb(await sn.stat(ns, request.key)))

    async def Update(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        i = request.info
        info = Info(name=i.name, kind=i.kind, parent=i.parent, labels=dict(i.labels))
        updated = await sn.update(ns, info, list(request.update_mask.paths))
        return pb.UpdateSnapshotResponse(info=info_to_pb(updated))

    async def List(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        infos = await sn.walk(ns, *request.filters)
        for i in range(0, len(infos), 100):  # containerd sends batches of 100
            yield pb.ListSnapshotsResponse(info=[info_to_pb(x) for x in infos[i:i + 100]])

    async def Usage(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        usage = await sn.usage(ns, request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def Cleanup(self, request, context):
        ns = namespace(context)
        sn = await self.local.get(ns, request.snapshotter)
        await sn.cleanup()
        return empty_pb2.Empty()


async def init_local(ic: InitContext) -> Local:
    db = ic.get(PluginType.METADATA)
    config = ic.config or Config()
    ic.meta.exports["default"] = config.default
    return Local(db, ic.get(PluginType.EVENT), db.snapshotters, config.default)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "snapshots", init_local, Service,
                        requires=(PluginType.EVENT, PluginType.METADATA, PluginType.SNAPSHOT), config=Config)
