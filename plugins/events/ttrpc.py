"""io.containerd.ttrpc.v1.events: containerd.services.events.ttrpc.v1.Events
on the daemon's ttrpc socket, where shims forward their task events
(/tasks/create, /tasks/exit, ...). Forward puts the shim's envelope, with
its own namespace, topic and timestamp, on the events exchange, so `ctr
events` subscribers see it. containerd serves this from its events service;
here it is its own small plugin because it rides on the ttrpc server, not
the gRPC one."""

from __future__ import annotations

import datetime
from typing import Iterable

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs

SERVICE = "containerd.services.events.ttrpc.v1.Events"


class TTRPCEvents:
    def __init__(self, exchange):
        self.exchange = exchange

    def register_ttrpc(self, server) -> None:
        server.register(SERVICE, {"Forward": self.forward})

    async def forward(self, ctx, payload: bytes):
        from google.protobuf import empty_pb2
        from google.protobuf.message import DecodeError

        from pycontainerd.core.events import Envelope

        ForwardRequest = _forward_request()
        try:
            req = ForwardRequest.FromString(payload)
        except DecodeError:
            raise errdefs.InvalidArgument("forward: cannot decode the request") from None
        env = req.envelope
        if not env.HasField("timestamp"):
            raise errdefs.InvalidArgument("timestamp must be set on forwarded event")
        try:
            when = env.timestamp.ToDatetime(tzinfo=datetime.timezone.utc)
        except (ValueError, OverflowError):
            raise errdefs.InvalidArgument("forward: timestamp out of range") from None
        self.exchange.forward(Envelope(when, env.namespace, env.topic, env.event))
        return empty_pb2.Empty()


def _forward_request():
    from pycontainerd.api.services.ttrpc.events.v1 import events_pb2

    return events_pb2.ForwardRequest


async def init(ic: InitContext) -> TTRPCEvents:
    return TTRPCEvents(ic.get(PluginType.EVENT))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.TTRPC, id="events", requires=(PluginType.EVENT,), init=init)]
