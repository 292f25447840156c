"""The introspection service: which plugins are loaded, and who this server is.

`io.containerd.service.v1.introspection-service` answers from the daemon's
plugin set at call time (so it sees every plugin, including those
initialised after it); `io.containerd.grpc.v1.introspection` serves it as
containerd.services.introspection.v1.Introspection. Plugins come back in
init order, filtered by containerd's filter syntax on `type` and `id`.

Init durations are not part of containerd's Plugin message; they travel
in the trailing metadata key `pycontainerd-init-durations` (JSON, URI ->
seconds), invisible to ctr and read by `pyctr plugins ls --format json`.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Iterable

from google.protobuf import empty_pb2
from google.rpc import status_pb2

from pycontainerd.api.services.introspection.v1 import introspection_pb2 as pb
from pycontainerd.api.services.introspection.v1 import introspection_pb2_grpc as pb_grpc
from pycontainerd.api.types import platform_pb2
from pycontainerd.core import filters
from pycontainerd.core.context import InitContext, Plugin, PluginSet
from pycontainerd.core.registry import Registration, hookimpl
from pycontainerd.core.service import service_pair
from pycontainerd.pkg import errgrpc

SERVICE_ID = "introspection-service"
DURATIONS_KEY = "pycontainerd-init-durations"


def parse_platform(spec: str) -> platform_pb2.Platform:
    parts = spec.split("/")
    return platform_pb2.Platform(
        os=parts[0], architecture=parts[1] if len(parts) > 1 else "", variant=parts[2] if len(parts) > 2 else ""
    )


def plugin_to_pb(p: Plugin) -> pb.Plugin:
    msg = pb.Plugin(
        type=p.registration.type,
        id=p.registration.id,
        requires=list(p.registration.requires),
        platforms=[parse_platform(s) for s in p.meta.platforms],
        exports=p.meta.exports,
        capabilities=p.meta.capabilities,
    )
    if p.error is not None:
        code, message = errgrpc.to_grpc(p.error)
        msg.init_err.CopyFrom(status_pb2.Status(code=code.value[0], message=message))
    return msg


class Local:
    """The introspection service itself, reading the live plugin set."""

    def __init__(self, plugins: PluginSet, root: str):
        self.plugins = plugins
        self.root = root

    def list(self, flt: filters.Filter) -> list[tuple[Plugin, pb.Plugin]]:
        out = []
        for p in self.plugins:
            fields = {"type": p.registration.type, "id": p.registration.id}
            if flt.match(lambda path: (fields.get(path[0], ""), bool(fields.get(path[0]))) if path else ("", False)):
                out.append((p, plugin_to_pb(p)))
        return out

    def uuid(self) -> str:
        """A UUID made once and kept in the plugin's root, as containerd does."""
        path = os.path.join(self.root, "uuid")
        try:
            with open(path) as f:
                value = f.read().strip()
            uuid.UUID(value)
            return value
        except (FileNotFoundError, ValueError):
            pass
        value = str(uuid.uuid4())
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return value


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class Service(pb_grpc.IntrospectionServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_IntrospectionServicer_to_server(self, server)

    async def Plugins(self, request: pb.PluginsRequest, context) -> pb.PluginsResponse:
        flt = await filters.parse_all_off_loop(*request.filters)  # bad syntax: InvalidArgument
        if filters.is_heavy(flt):  # 100k selectors times every plugin: off the loop
            rows = await filters.matching(flt, self.local.list, flt)
        else:
            rows = self.local.list(flt)
        durations = {p.uri: round(p.duration, 6) for p, _ in rows}
        context.set_trailing_metadata(((DURATIONS_KEY, json.dumps(durations)),))
        return pb.PluginsResponse(plugins=[m for _, m in rows])

    async def Server(self, request: empty_pb2.Empty, context) -> pb.ServerResponse:
        return pb.ServerResponse(uuid=self.local.uuid(), pid=os.getpid(), pidns=pid_namespace())


async def init_local(ic: InitContext) -> Local:
    local = Local(ic.plugins, ic.root)
    local.uuid()  # made at start, so the first Server call does no I/O
    return local


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "introspection", init_local, Service)
