"""The events exchange: publish, forward, subscribe with filters.

Events are protobuf messages wrapped in an envelope (timestamp, namespace,
topic, event) as containerd's are. Subscribers get their own bounded queue
(QUEUE_SIZE events and QUEUE_BYTES of payload: a client may publish 16 MiB
events, and one subscriber that stops reading must not pin gigabytes), so a
slow subscriber loses its own events (and the log says so, once per stall)
rather than stalling publishers. Filters use containerd's syntax over the
envelope's fields: `topic`, `namespace` and `event.<field>`; a subscriber's
filter of many selectors is matched off the loop (filters.match_off_loop),
so it costs that subscriber, not every other client.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message

from pycontainerd.pkg import errdefs, identifiers

from . import filters

log = structlog.get_logger(__name__)

QUEUE_SIZE = 1024
QUEUE_BYTES = 16 << 20  # payload bytes waiting for one subscriber (one event may be larger)
_CLOSED = object()  # queued to a subscriber when the exchange closes


@dataclass(frozen=True)
class Envelope:
    """An event as the exchange carries it: when, where (namespace), what topic, the payload."""

    timestamp: datetime.datetime
    namespace: str
    topic: str
    event: any_pb2.Any

    def field(self, path: list[str]) -> tuple[str, bool]:
        """The filter adaptor: containerd's envelope field paths."""
        if not path:
            return "", False
        head = path[0]
        if head == "namespace":
            return self.namespace, bool(self.namespace)
        if head == "topic":
            return self.topic, bool(self.topic)
        if head == "event" and len(path) > 1:
            return _event_field(self.event, path[1:])
        return "", False


def pack(event: Message) -> any_pb2.Any:
    """Wrap like containerd's typeurl: the type URL is the bare full name."""
    return any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())


def _event_field(event: any_pb2.Any, path: list[str]) -> tuple[str, bool]:
    from google.protobuf import symbol_database

    name = event.type_url.rsplit("/", 1)[-1]
    try:
        cls = symbol_database.Default().GetSymbol(name)
    except KeyError:
        return "", False
    try:
        msg = cls.FromString(event.value)
    except Exception:  # a publisher's bytes that do not decode: nothing to match
        return "", False
    value: Any = msg
    for part in path:
        if isinstance(value, Message) and part in value.DESCRIPTOR.fields_by_name:
            value = getattr(value, part)
        elif hasattr(value, "keys") and part in value:  # a map field such as labels
            value = value[part]
        else:
            return "", False
    if isinstance(value, (str, int, bool)):
        return str(value), str(value) != ""
    return "", False


def validate_topic(topic: str) -> None:
    """containerd's validateTopic: '/' then '/'-separated components, each
    a valid identifier (so at most 76 bytes of [A-Za-z0-9._-])."""
    if not topic:
        raise errdefs.InvalidArgument("must not be empty")
    if topic[0] != "/":
        raise errdefs.InvalidArgument("must start with '/'")
    if len(topic) == 1:
        raise errdefs.InvalidArgument("must have at least one component")
    for component in topic[1:].split("/"):
        try:
            identifiers.validate(component)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"failed validation on component {errdefs.quote(component)}: {exc.message}"
            ) from None


def _check_topic(topic: str) -> None:
    try:
        validate_topic(topic)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"envelope topic {errdefs.quote(topic)}: {exc.message}") from None


def validate_envelope(envelope: "Envelope") -> None:
    """containerd's validateEnvelope, for Forward: the envelope's own
    namespace must be an identifier, its topic valid."""
    try:
        identifiers.validate(envelope.namespace)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"event envelope has invalid namespace: {exc.message}") from None
    _check_topic(envelope.topic)


class Exchange:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue] = set()

    def publish(self, namespace: str, topic: str, event: Message | any_pb2.Any) -> Envelope:
        if not namespace:
            raise errdefs.InvalidArgument("namespace is required to publish an event")
        _check_topic(topic)
        packed = event if isinstance(event, any_pb2.Any) else pack(event)
        env = Envelope(datetime.datetime.now(datetime.timezone.utc), namespace, topic, packed)
        self._deliver(env)
        return env

    def forward(self, envelope: Envelope) -> None:
        validate_envelope(envelope)
        self._deliver(envelope)

    def _deliver(self, env: Envelope) -> None:
        log.debug("event", topic=errdefs.cut(env.topic), namespace=env.namespace)  # topics have no length limit
        size = _size_of(env)
        for sub in list(self._subscribers):
            sub._offer(env, size)

    def subscribe(self, *filter_strings: str) -> "Subscription":
        """Start receiving now; iterate the result to get the envelopes that
        match any of the filters. Close it (or use `with`) to stop."""
        return Subscription(self, filters.parse_all(*filter_strings))  # bad syntax: InvalidArgument

    async def subscribe_off_loop(self, *filter_strings: str) -> "Subscription":
        """subscribe(), with long filter text parsed on a worker thread (for
        filters a client sent)."""
        return Subscription(self, await filters.parse_all_off_loop(*filter_strings))

    def close(self) -> None:
        """End every subscription (at shutdown), so streaming RPCs finish
        instead of holding the server for its grace period."""
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


def _size_of(env: Envelope) -> int:
    """What an envelope weighs in a queue: its payload and strings."""
    event = env.event
    return len(event.value) + len(event.type_url) + len(env.topic) + len(env.namespace)


class Subscription:
    def __init__(self, exchange: Exchange, flt: Any):
        self._exchange = exchange
        self._filter = flt
        self._queue: asyncio.Queue = asyncio.Queue()  # bounded by _offer
        self._bytes = 0  # payload bytes waiting in _queue
        self._dropped = 0  # events lost in the current stall
        exchange._subscribers.add(self)

    def _offer(self, env: Envelope, size: int) -> None:
        """Queue `env` unless this subscriber is too far behind (by count,
        or by bytes once something is waiting)."""
        if self._queue.qsize() >= QUEUE_SIZE or (self._bytes and self._bytes + size > QUEUE_BYTES):
            if not self._dropped:  # once per stall, not once per event
                log.warning("events dropped: subscriber too slow", topic=env.topic,
                            waiting=self._queue.qsize(), waiting_bytes=self._bytes)
            self._dropped += 1
            return
        if self._dropped:
            log.warning("subscriber caught up", dropped=self._dropped)
            self._dropped = 0
        self._bytes += size
        self._queue.put_nowait((env, size))

    def _end(self) -> None:
        self._queue.put_nowait((_CLOSED, 0))

    def close(self) -> None:
        self._exchange._subscribers.discard(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Envelope:
        while True:
            env, size = await self._queue.get()
            self._bytes -= size
            if env is _CLOSED:
                raise StopAsyncIteration
            if await filters.match_off_loop(self._filter, env.field):
                return env
