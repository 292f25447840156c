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
from pycontainerd.core.events import Envelope, validate_envelope
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import DecodeFailure, namespace
from pycontainerd.pkg import errdefs


_ZERO_TIME = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)  # Go's zero time: "not set"
# the range of a google.protobuf.Timestamp (years 1 to 9999), as containerd's
# decoder checks it
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799


def envelope_time(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    """The envelope's timestamp (an unset one reads as Go's zero time). One
    out of Timestamp's range fails as containerd's decoder fails it."""
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS):
        where = "before 0001-01-01" if ts.seconds < _MIN_SECONDS else "after 10000-01-01"
        raise DecodeFailure(f"grpc: error unmarshalling request: timestamp: seconds:{ts.seconds} nanos:{ts.nanos} {where}")
    if not (0 <= ts.nanos < 1_000_000_000):
        raise DecodeFailure(
            f"grpc: error unmarshalling request: timestamp: seconds:{ts.seconds} nanos:{ts.nanos}: nanos not in range [0, 1e9)"
        )
    return _ZERO_TIME + datetime.timedelta(seconds=ts.seconds - _MIN_SECONDS, microseconds=ts.nanos // 1000)


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
        try:
            ns = namespace(context)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed publishing event: {exc.message}") from None
        self.exchange.publish(ns, request.topic, request.event)
        return empty_pb2.Empty()

    async def Forward(self, request, context):
        env = request.envelope
        when = envelope_time(env.timestamp) if env.HasField("timestamp") else _ZERO_TIME
        envelope = Envelope(when, env.namespace, env.topic, env.event)
        validate_envelope(envelope)
        if when == _ZERO_TIME:
            raise errdefs.InvalidArgument("timestamp must be set on forwarded event")
        self.exchange.forward(envelope)
        return empty_pb2.Empty()

    async def Subscribe(self, request, context):
        with await self.exchange.subscribe_off_loop(*request.filters) as subscription:
            async for env in subscription:
                yield envelope_to_pb(env)


async def init(ic: InitContext) -> Service:
    return Service(ic.get(PluginType.EVENT))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.GRPC, id="events", requires=(PluginType.EVENT,), init=init)]
