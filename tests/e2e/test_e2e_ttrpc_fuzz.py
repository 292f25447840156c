"""A hypothesis fuzz of the daemon's ttrpc socket (`<socket>.ttrpc`, where
shims call containerd.services.events.ttrpc.v1.Events/Forward), through a
real daemon started as a process.

Each example opens one connection and sends a run of frames drawn from
what a broken or hostile peer sends: requests whose body is garbage,
requests to Forward with garbage payloads or hostile envelopes (topics
and namespaces of megabytes, control characters, timestamps out of range,
none at all), even and reused stream ids, non-zero flags, unknown message
types, messages past the 4 MiB cap. The bar, taken from Go's ttrpc:

- every request frame (type 1, within the cap) gets exactly one answer on
  its stream id, and so does every frame past the cap (RESOURCE_EXHAUSTED);
  frames of another type get none; each answer is a well-formed response
  with a gRPC code and a bounded message free of Python internals;
- the connection still serves a good Forward afterwards;
- a frame cut short (a header of less than 10 bytes, or a body shorter
  than its header says) holds only that connection: others are served
  meanwhile, and when the peer stops writing the daemon closes it;
- the daemon keeps serving gRPC and ttrpc to everyone else.

A wait longer than HANG seconds for an answer or a close is a hang: the
test fails there rather than block CI.

tests/test_ttrpc_hostile.py covers the same server in-process (its memory
bounds, thousands of connections, slow peers); this file is the fuzz of
the real daemon's socket.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from e2e_support import DaemonFactory
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.pkg.ttrpc import framing
from pycontainerd.pkg.ttrpc.messages import KeyValue, Request, Response

pytestmark = pytest.mark.e2e

EVENTS = "containerd.services.events.ttrpc.v1.Events"
HANG = 30.0  # seconds without an expected answer or close: a hang
MAX_DETAILS = 4096
LEAKS = ("Traceback", "<class", "Error(", "[Errno", "File \"", "object at 0x")
MIB = 1 << 20
HEADER = struct.Struct(">IIBB")


@pytest.fixture(scope="module")
def daemon():
    factory = DaemonFactory()
    try:
        yield factory()
    finally:
        factory.close()


# -- what a hostile peer sends ---------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.sampled_from(["", "/tasks/exit", "/a b/c", "abc", "/" + "t" * (3 * MIB), "n" * (3 * MIB), "default",
                     "\x00\x1b[2J", "/tasks/" + "x" * 77, "/" + "a/" * 2000 + "b", "é" * 4000, "a b", "-"]),
    # answers quote topics and namespaces: never a marker read_answer looks
    # for (hypothesis draws string constants it finds in the source)
    st.text(max_size=30).filter(lambda t: not any(leak in t for leak in LEAKS)),
)


@st.composite
def envelopes(draw) -> bytes:
    env = events_pb2.Envelope(namespace=draw(HOSTILE_TEXT), topic=draw(HOSTILE_TEXT))
    if draw(st.booleans()):
        env.event.CopyFrom(any_pb2.Any(type_url=draw(HOSTILE_TEXT), value=draw(st.binary(max_size=64))))
    when = draw(st.sampled_from(["now", "none", "huge", "negative", "nanos"]))
    if when == "now":
        env.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=int(time.time())))
    elif when == "huge":
        env.timestamp.seconds = 2 ** 62
    elif when == "negative":
        env.timestamp.seconds = -(2 ** 62)
    elif when == "nanos":
        env.timestamp.seconds, env.timestamp.nanos = 1, -5
    return events_pb2.ForwardRequest(envelope=env).SerializeToString()


def request(service: str, method: str, payload: bytes, timeout_nano: int = 0, metadata=()) -> bytes:
    return Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano,
                   metadata=[KeyValue(key=k, value=v) for k, v in metadata]).SerializeToString()


METADATA = st.lists(st.tuples(st.sampled_from(["containerd-namespace-ttrpc", "x", ""]), HOSTILE_TEXT), max_size=3)
TIMEOUTS = st.sampled_from([0, 1, -1, 2 ** 63 - 1, -(2 ** 63), 10 ** 9])


@st.composite
def frames(draw, index: int) -> tuple[bytes, int | None]:
    """One frame and the stream id its answer comes on (None: no answer)."""
    kind = draw(st.sampled_from(["forward", "payload", "garbage", "service", "unknown-type", "even", "flags",
                                 "oversized"]))
    event(f"frame: {kind}")
    sid = 2 * index + 1
    if kind == "forward":  # a hostile envelope
        body = request(EVENTS, "Forward", draw(envelopes()), draw(TIMEOUTS), draw(METADATA))
    elif kind == "payload":  # Forward with a payload that is not a ForwardRequest
        body = request(EVENTS, "Forward", draw(st.binary(max_size=256)), draw(TIMEOUTS))
    elif kind == "garbage":  # a body that is not a Request (or, by chance, is one)
        body = draw(st.binary(max_size=256))
    elif kind == "service":  # services and methods that are not there
        body = request(draw(st.sampled_from([EVENTS, "", "containerd.task.v2.Task", "x" * MIB])),
                       draw(st.sampled_from(["Forward", "", "Subscribe", "y" * 1000])), b"")
    elif kind == "unknown-type":  # ignored, as Go's ttrpc ignores them
        body = draw(st.binary(max_size=64))
        return framing.encode(sid, draw(st.sampled_from([0, 2, 3, 4, 127, 255])), body), None
    elif kind == "even":
        body = request(EVENTS, "Forward", draw(envelopes()))
        sid = draw(st.sampled_from([0, 2, 2 ** 32 - 2]))
    elif kind == "flags":
        body = request(EVENTS, "Forward", draw(envelopes()))
        return HEADER.pack(len(body), sid, framing.TYPE_REQUEST, draw(st.integers(1, 255))) + body, sid
    else:  # past the cap: sent in full, skipped by the daemon, answered RESOURCE_EXHAUSTED
        length = framing.MAX_MESSAGE + draw(st.sampled_from([1, 4096]))
        return HEADER.pack(length, sid, framing.TYPE_REQUEST, 0) + b"o" * length, sid
    if draw(st.integers(0, 5)) == 0:  # now and then, a stream id used before on this connection
        sid = 1
    return framing.encode(sid, framing.TYPE_REQUEST, body), sid


@st.composite
def sessions(draw) -> tuple[list[tuple[bytes, int | None]], bytes]:
    count = draw(st.integers(1, 6))
    sent = [draw(frames(i)) for i in range(count)]
    oversized = [f for f in sent if len(f[0]) > framing.MAX_MESSAGE]
    if len(oversized) > 1:  # at most one 4 MiB frame per connection: the fuzz stays quick
        sent = [f for f in sent if len(f[0]) <= framing.MAX_MESSAGE] + oversized[:1]
    tail = draw(st.sampled_from(["none", "header", "body", "huge-body"]))
    event(f"tail: {tail}")
    if tail == "header":  # part of a header
        cut = draw(st.binary(min_size=1, max_size=framing.HEADER_LENGTH - 1))
    elif tail == "body":  # a body shorter than its header says
        body = request(EVENTS, "Forward", draw(envelopes()))
        cut = framing.encode(999, framing.TYPE_REQUEST, body)[: draw(st.integers(framing.HEADER_LENGTH, len(body) + 9))]
    elif tail == "huge-body":  # a header announcing more than the cap, and a little of it
        cut = HEADER.pack(draw(st.sampled_from([framing.MAX_MESSAGE + 1, 2 ** 32 - 1])), 1001, 1, 0) + b"h" * 100
    else:
        cut = b""
    return sent, cut


# -- one connection ----------------------------------------------------------------------


def connect(d) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(HANG)
    s.connect(d.address + ".ttrpc")
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except socket.timeout:
            raise AssertionError(f"no answer within {HANG}s: the daemon hangs") from None
        if not chunk:
            raise AssertionError(f"the daemon closed the connection with {n - len(buf)} bytes of a message unsent")
        buf += chunk
    return bytes(buf)


def read_answer(s: socket.socket, d) -> tuple[int, Response]:
    length, sid, type_, flags = HEADER.unpack(recv_exactly(s, framing.HEADER_LENGTH))
    assert (type_, flags) == (framing.TYPE_RESPONSE, 0)
    assert length <= framing.MAX_MESSAGE
    resp = Response.FromString(recv_exactly(s, length))
    assert 0 <= resp.status.code <= 16, resp.status.code
    message = resp.status.message
    assert len(message.encode()) <= MAX_DETAILS, len(message)
    for leak in (*LEAKS, d.root, d.state):
        assert leak not in message, message
    return sid, resp


def assert_closed(s: socket.socket) -> None:
    """The peer stopped writing: the daemon closes its end (no answer is
    owed: every whole frame was answered before)."""
    try:
        data = s.recv(1)
    except socket.timeout:
        raise AssertionError(f"the daemon kept a half-closed connection open for {HANG}s") from None
    except ConnectionResetError:
        return
    assert data == b"", data


def good_forward(s: socket.socket, d, sid: int) -> None:
    env = events_pb2.Envelope(namespace="fuzz", topic="/fuzz/ok")
    env.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=int(time.time())))
    s.sendall(framing.encode(sid, framing.TYPE_REQUEST,
                             request(EVENTS, "Forward", events_pb2.ForwardRequest(envelope=env).SerializeToString())))
    got, resp = read_answer(s, d)
    assert (got, resp.status.code) == (sid, 0), resp.status.message


def others_served(d) -> None:
    """Another client is answered on both sockets."""
    with connect(d) as s:
        good_forward(s, d, 1)
    with grpc.insecure_channel("unix:" + d.address) as ch:
        version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty(), timeout=HANG)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(session=sessions())
def test_every_frame_is_answered_or_the_connection_closed(daemon, session):
    sent, cut = session
    expected = sorted(sid for _, sid in sent if sid is not None)
    with connect(daemon) as s:
        # written from a thread: the daemon stops reading while its answers
        # are not taken, and a 4 MiB frame does not fit in the socket buffers
        payload = b"".join(frame for frame, _ in sent)
        writer = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        writer.start()
        answered = sorted(read_answer(s, daemon)[0] for _ in expected)
        writer.join(HANG)
        assert not writer.is_alive(), "the daemon stopped reading"
        assert answered == expected
        good_forward(s, daemon, 10_001)
        if cut:
            s.sendall(cut)
            others_served(daemon)  # while this connection holds a partial frame
        s.shutdown(socket.SHUT_WR)
        assert_closed(s)
    others_served(daemon)
