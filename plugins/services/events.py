"""io.containerd.grpc.v1.events: containerd.services.events.v1.Events over
the exchange. Publish takes the namespace from the request metadata;
Forward keeps the envelope's own; Subscribe streams until the client
goes away."""

from __future__ import annotations

import datetime
from typing import Iterable

from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api.services.events.v1 import events_pb2 as pb
from pycontainerd.api.services.events.v1 import events_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.events import Envelope
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import namespace
from pycontainerd.pkg import errdefs


def envelope_to_pb(env: Envelope) -> pb.Envelope:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(env.timestamp)
    return pb.Envelope(timestamp=ts, namespace=env.namespace, topic=env.topic, event=env.event)


class Service(pb_grpc.EventsServicer):
    def __init__(self, exchange):
        self.exchange = exchange

    def register(self, server) -> None:
        pb_grpc.add_EventsServicer_to_server(self, server)

    async def Publish(self, request, context):
        self.exchange.publish(namespace(context), request.topic, request.event)
        return empty_pb2.Empty()

    async def Forward(self, request, context):
        env = request.envelope
        if not env.namespace:
            raise errdefs.InvalidArgument("envelope namespace is required")
        when = env.timestamp.ToDatetime(tzinfo=datetime.timezone.utc) if env.HasField("timestamp") else datetime.datetime.now(datetime.timezone.utc)
        self.exchange.forward(Envelope(when, env.namespace, env.topic, env.event))
        return empty_pb2.Empty()

    async def Subscribe(self, request, context):
        with self.exchange.subscribe(*request.filters) as subscription:
            async for env in subscription:
                yield envelope_to_pb(env)


async def init(ic: InitContext) -> Service:
    return Service(ic.get(PluginType.EVENT))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.GRPC, id="events", requires=(PluginType.EVENT,), init=init)]
