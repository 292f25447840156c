"""pkg/ttrpc's client against a hostile server: a hypothesis fuzz of what
comes back for a call (garbage bodies, responses that do not decode,
statuses with unknown codes, answers on other stream ids, unknown message
types, headers past the 4 MiB cap, frames cut short) and of how the server
ends (it closes, or keeps the connection open and says nothing more).

The client is the real one, in this process; the server is a UNIX socket
that answers the client's first request with the drawn bytes. Each call
must end with the response it asked for or one of errdefs' classes, never
another exception; a call made with a timeout ends by it at the latest,
and one made without ends as soon as the server closes; after the server
closes, the next call fails at once with Closed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct

from google.protobuf import empty_pb2, timestamp_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.ttrpc import Client, framing
from pycontainerd.pkg.ttrpc.messages import Response
from pycontainerd.pkg.ttrpc.status import Closed
from pycontainerd.testing.daemon import short_tempdir

HEADER = struct.Struct(">IIBB")
HANG = 20.0  # seconds past which a call that should have ended is a hang
TIMEOUT = 0.3  # the call's own timeout, when it has one


@st.composite
def answers(draw) -> tuple[list[tuple[str, object]], bool, bool]:
    """What the server writes after reading the request on stream 1 (as
    (kind, value) parts, the stream id filled in later), whether it closes
    then, and whether the client call has a timeout."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["garbage", "status", "payload", "other-stream", "unknown-type", "oversized",
                                     "raw"]))
        event(f"part: {kind}")
        if kind == "garbage":  # a body that is not a Response
            parts.append((kind, draw(st.binary(max_size=128))))
        elif kind == "status":  # any code, any message, maybe details
            status = status_pb2.Status(code=draw(st.integers(-(2 ** 31), 2 ** 31 - 1)),
                                       message=draw(st.text(max_size=64) | st.just("m" * (1 << 20))))
            if draw(st.booleans()):
                status.details.add(type_url=draw(st.text(max_size=20)), value=draw(st.binary(max_size=20)))
            parts.append((kind, Response(status=status).SerializeToString()))
        elif kind == "payload":  # OK, with a payload that may not decode as the answer asked for
            resp = Response(payload=draw(st.binary(max_size=64) | st.just(
                timestamp_pb2.Timestamp(seconds=5).SerializeToString())))
            resp.status.SetInParent()
            parts.append((kind, resp.SerializeToString()))
        elif kind == "other-stream":
            parts.append((kind, (draw(st.sampled_from([0, 2, 3, 2 ** 32 - 1])), Response().SerializeToString())))
        elif kind == "unknown-type":
            parts.append((kind, (draw(st.sampled_from([0, 1, 3, 255])), draw(st.binary(max_size=32)))))
        elif kind == "oversized":  # a header past the cap, and some of its body
            parts.append((kind, (draw(st.sampled_from([framing.MAX_MESSAGE + 1, 2 ** 32 - 1])),
                                 draw(st.integers(0, 4096)))))
        else:  # bytes that need not be a frame at all
            parts.append((kind, draw(st.binary(min_size=1, max_size=32))))
    return parts, draw(st.booleans()), draw(st.booleans())


def encode(parts) -> bytes:
    out = b""
    for kind, value in parts:
        if kind in ("garbage", "status", "payload"):
            out += framing.encode(1, framing.TYPE_RESPONSE, value)
        elif kind == "other-stream":
            out += framing.encode(value[0], framing.TYPE_RESPONSE, value[1])
        elif kind == "unknown-type":
            out += framing.encode(1, value[0], value[1])
        elif kind == "oversized":
            out += HEADER.pack(value[0], 1, framing.TYPE_RESPONSE, 0) + b"o" * value[1]
        else:
            out += value
    return out


async def exchange(path: str, data: bytes, close: bool, timeout: float | None) -> tuple[object, object]:
    """One client call against a server that answers `data`; the call's
    outcome (a message or the exception) and the next call's."""
    served = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await framing.read_message(reader)
            writer.write(data)
            await writer.drain()
            if close:
                writer.close()
                return
            served.set()
            await reader.read()  # silent until the client goes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        client = await Client.connect(path, timeout=5)
        try:
            outcome = await outcome_of(client.call("s.Svc", "M", empty_pb2.Empty(), timestamp_pb2.Timestamp,
                                                   timeout=timeout))
            then = await outcome_of(client.call("s.Svc", "M", empty_pb2.Empty(), timestamp_pb2.Timestamp,
                                                timeout=TIMEOUT)) if close else None
        finally:
            await client.close()
    finally:
        server.close()
        await server.wait_closed()
    return outcome, then


async def outcome_of(call) -> object:
    try:
        return await asyncio.wait_for(call, HANG)
    except asyncio.TimeoutError:
        raise AssertionError(f"the call did not end within {HANG}s") from None
    except errdefs.ContainerdError as exc:
        return exc


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(answer=answers())
def test_a_hostile_server_gets_a_clean_error_never_a_hang(answer):
    parts, close, with_timeout = answer
    if not close and not with_timeout:  # a silent open server and no timeout: a wait by design; give it one
        with_timeout = True
    d = short_tempdir("pcd-tcf-")
    try:
        outcome, then = asyncio.run(exchange(os.path.join(d, "s"), encode(parts), close,
                                             TIMEOUT if with_timeout else None))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    event(f"outcome: {type(outcome).__name__}")
    assert isinstance(outcome, (timestamp_pb2.Timestamp, errdefs.ContainerdError)), repr(outcome)
    if isinstance(outcome, errdefs.ContainerdError):
        assert len(str(outcome).encode()) <= (2 << 20), len(str(outcome))
    if close:
        assert isinstance(then, Closed), repr(then)
