"""The daemon's ttrpc socket (`<grpc address>.ttrpc`) under a hostile peer
writing raw bytes: every message is answered with a status (bounded, no
Python internals) or the connection is closed; the daemon keeps answering
another client meanwhile; and what one peer sends does not pile up in the
daemon's memory (the daemon runs in this process, so its memory is ours:
/proc/self/status).

The answers follow Go's ttrpc (its wording for an oversized message, an
undecodable request, an even stream id, an unknown service or method) and
containerd's events checks for Forward (topic and namespace rules). The one
place we go beyond Go's ttrpc, the server-wide budget for large messages,
answers RESOURCE_EXHAUSTED as an oversized message does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontainerd.api.services.events.v1 import events_pb2 as grpc_events_pb2
from pycontainerd.api.services.events.v1 import events_pb2_grpc
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.pkg.ttrpc import CallContext, Server, framing
from pycontainerd.pkg.ttrpc.messages import KeyValue, Request, Response
from pycontainerd.testing.daemon import InProcessDaemon, short_tempdir

EVENTS = "containerd.services.events.ttrpc.v1.Events"
MIB = 1 << 20
STALL_BOUND = 2.5  # seconds another client may wait while an attack runs (loaded 2-core CI)
MAX_DETAILS = 4096
RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNIMPLEMENTED = 8, 3, 12


@pytest.fixture(scope="module")
def daemon():
    d = InProcessDaemon().start()
    yield d
    d.stop()


def rss_mib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connect(d: InProcessDaemon, timeout: float = 30.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.address + ".ttrpc")  # blocking: waits for room in the backlog, as a Go dialer would not
    s.settimeout(timeout)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def read_response(s: socket.socket) -> tuple[int, Response]:
    length, stream_id, type_, _flags = struct.unpack(">IIBB", recv_exactly(s, framing.HEADER_LENGTH))
    assert type_ == framing.TYPE_RESPONSE
    return stream_id, Response.FromString(recv_exactly(s, length))


def envelope(topic: str = "/tasks/exit", namespace: str = "hostile", value: bytes = b"") -> events_pb2.Envelope:
    env = events_pb2.Envelope(namespace=namespace, topic=topic,
                              event=any_pb2.Any(type_url="containerd.events.TaskExit", value=value))
    env.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=int(time.time())))
    return env


def forward_request(env: events_pb2.Envelope) -> Request:
    return Request(service=EVENTS, method="Forward", payload=events_pb2.ForwardRequest(envelope=env).SerializeToString())


def call(s: socket.socket, stream_id: int, req: Request) -> Response:
    s.sendall(framing.encode(stream_id, framing.TYPE_REQUEST, req.SerializeToString()))
    got, resp = read_response(s)
    assert got == stream_id
    return resp


def assert_clean(resp: Response, d: InProcessDaemon) -> None:
    message = resp.status.message
    assert len(message.encode()) <= MAX_DETAILS, len(message)
    for leak in ("Traceback", "<class", "Error(", "[Errno", d.dir):
        assert leak not in message, message


def still_served(d: InProcessDaemon) -> None:
    """Another client is answered promptly, on both sockets."""
    started = time.monotonic()
    with connect(d, timeout=STALL_BOUND * 4) as s:
        assert call(s, 1, forward_request(envelope())).status.code == 0
    with grpc.insecure_channel("unix:" + d.address) as ch:
        version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty(), timeout=STALL_BOUND * 4)
    assert time.monotonic() - started < STALL_BOUND


# -- framing attacks ---------------------------------------------------------------


def test_a_header_claiming_4_gib_is_skipped_not_buffered(daemon):
    """The body is read and dropped as it comes: 32 MiB sent cost no 32 MiB."""
    before = rss_mib()
    with connect(daemon) as s:
        s.sendall(struct.pack(">IIBB", 0xFFFFFFFF, 1, framing.TYPE_REQUEST, 0))
        chunk = b"z" * MIB
        for _ in range(32):
            s.sendall(chunk)
        still_served(daemon)
    assert rss_mib() - before < 16


def test_a_frame_over_4_mib_gets_ttrpcs_answer_and_the_connection_goes_on(daemon):
    with connect(daemon) as s:
        length = framing.MAX_MESSAGE + 1
        s.sendall(struct.pack(">IIBB", length, 1, framing.TYPE_REQUEST, 0) + b"y" * length)
        stream_id, resp = read_response(s)
        assert (stream_id, resp.status.code) == (1, RESOURCE_EXHAUSTED)
        assert resp.status.message == f"message length {length} exceed maximum message size of {framing.MAX_MESSAGE}"
        assert call(s, 3, forward_request(envelope())).status.code == 0


def test_truncated_frames_then_close_cost_only_that_connection(daemon):
    fds = open_fds()
    for junk in (b"\x00\x00\x00", struct.pack(">IIBB", 100, 1, 1, 0) + b"x" * 50,
                 struct.pack(">IIBB", 5 * MIB, 1, 1, 0) + b"x" * MIB):
        s = connect(daemon)
        s.sendall(junk)
        s.close()
    still_served(daemon)
    deadline = time.monotonic() + 10
    while open_fds() > fds and time.monotonic() < deadline:  # the daemon closes its ends
        time.sleep(0.05)
    assert open_fds() <= fds


def test_thousands_of_connections_neither_stall_others_nor_stay_behind(daemon):
    fds = open_fds()
    before = rss_mib()
    socks = [connect(daemon) for _ in range(2000)]
    try:
        for s in socks[::10]:  # some of them half-way through a header
            s.sendall(b"\x00\x00")
        still_served(daemon)
        assert rss_mib() - before < 64
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 20
    while open_fds() > fds + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds() <= fds + 5, "the daemon kept the closed connections"


def test_a_slow_loris_holds_nobody_else(daemon):
    """One byte per second: the request is answered once it is complete,
    and everyone else is answered meanwhile."""
    frame = framing.encode(1, framing.TYPE_REQUEST, forward_request(envelope()).SerializeToString())
    with connect(daemon) as loris:
        for i, byte in enumerate(frame[:4]):
            loris.sendall(bytes([byte]))
            still_served(daemon)
            time.sleep(1)
        loris.sendall(frame[4:])
        stream_id, resp = read_response(loris)
        assert (stream_id, resp.status.code) == (1, 0)


def test_large_messages_parked_on_many_connections_are_bounded(daemon):
    """40 connections each send all but one byte of a 4 MiB message: the
    daemon buffers at most its budget for large messages (not 160 MiB),
    answers the ones past it RESOURCE_EXHAUSTED, and serves small calls and,
    once the budget is free again, large ones."""
    before = rss_mib()
    big = framing.MAX_MESSAGE - 1
    parked = [connect(daemon) for _ in range(40)]
    try:
        for s in parked:
            s.sendall(struct.pack(">IIBB", big, 1, framing.TYPE_REQUEST, 0) + b"p" * (big - 1))
        grew = rss_mib() - before
        assert grew < framing.SERVER_BUDGET // MIB + 40, grew
        still_served(daemon)
        refused = 0
        for s in parked:
            s.sendall(b"p")
        for s in parked:
            _, resp = read_response(s)
            refused += resp.status.code == RESOURCE_EXHAUSTED
            assert resp.status.code in (RESOURCE_EXHAUSTED, INVALID_ARGUMENT)  # garbage bodies, if buffered
        assert refused >= 40 - framing.SERVER_BUDGET // big
    finally:
        for s in parked:
            s.close()
    time.sleep(0.5)
    with connect(daemon) as s:
        resp = call(s, 1, forward_request(envelope(value=b"v" * (2 * MIB))))
        assert resp.status.code == 0, resp.status.message


# -- requests -------------------------------------------------------------------


def test_garbage_requests_get_ttrpcs_answers(daemon):
    with connect(daemon) as s:
        s.sendall(framing.encode(1, framing.TYPE_REQUEST, b"\xff" * 64))
        _, resp = read_response(s)
        assert resp.status.code == INVALID_ARGUMENT
        assert resp.status.message.startswith("unmarshal request error: ")
        assert_clean(resp, daemon)
        s.sendall(framing.encode(2, framing.TYPE_REQUEST, forward_request(envelope()).SerializeToString()))
        stream_id, resp = read_response(s)
        assert (stream_id, resp.status.message) == (2, "StreamID must be odd for client initiated streams")
        resp = call(s, 3, Request(service=EVENTS, method="Forward", payload=b"\x0a\xff\xff\xff"))
        assert resp.status.code == INVALID_ARGUMENT
        assert_clean(resp, daemon)
        for stream_id, req, message in ((5, Request(service="nope.Service", method="Forward"), "service nope.Service"),
                                        (7, Request(service=EVENTS, method="Nope"), "method Nope"),
                                        (9, Request(service="x" * MIB, method="y"), None)):
            resp = call(s, stream_id, req)
            assert resp.status.code == UNIMPLEMENTED
            assert message is None or resp.status.message == message
            assert_clean(resp, daemon)


def test_forward_checks_topics_and_namespaces_as_containerd(daemon):
    with connect(daemon) as s:
        expected = {
            ("abc", "ns"): "envelope topic \"abc\": must start with '/': invalid argument",
            ("/a b/c", "ns"): 'envelope topic "/a b/c": failed validation on component "a b": identifier "a b" must '
                              'match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument',
            ("/tasks/exit", "a b"): 'event envelope has invalid namespace: identifier "a b" must match '
                                    '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument',
            ("/tasks/exit", ""): "event envelope has invalid namespace: identifier must not be empty: invalid argument",
        }
        for i, ((topic, ns), message) in enumerate(expected.items()):
            resp = call(s, 2 * i + 1, forward_request(envelope(topic, ns)))
            assert (resp.status.code, resp.status.message) == (INVALID_ARGUMENT, message)
        for i, (topic, ns) in enumerate((("/" + "t" * (3 * MIB), "ns"), ("/a", "n" * (3 * MIB)))):
            resp = call(s, 101 + 2 * i, forward_request(envelope(topic, ns)))
            assert resp.status.code == INVALID_ARGUMENT
            assert_clean(resp, daemon)
        # containerd bounds each component (an identifier), not the topic: a
        # 2 MiB topic of valid components is accepted there, and here
        resp = call(s, 151, forward_request(envelope("/" + "a/" * MIB + "b", "ns")))
        assert resp.status.code == 0, resp.status.message
        resp = call(s, 201, Request(service=EVENTS, method="Forward",
                                    payload=events_pb2.ForwardRequest(envelope=events_pb2.Envelope(
                                        namespace="ns", topic="/a")).SerializeToString()))
        assert (resp.status.code, resp.status.message) == (INVALID_ARGUMENT,
                                                           "timestamp must be set on forwarded event: invalid argument")


def test_a_huge_event_is_delivered_and_a_subscriber_that_never_reads_pins_little(daemon):
    """A 3.5 MiB event forwarded 100 times while one gRPC subscriber never
    reads: its queue holds at most the exchange's byte bound."""
    ch = grpc.insecure_channel("unix:" + daemon.address)
    stub = events_pb2_grpc.EventsStub(ch)
    stream = stub.Subscribe(grpc_events_pb2.SubscribeRequest(filters=['topic=="/hostile/huge"']))
    try:
        deadline = time.monotonic() + 10
        exchange = daemon.daemon.events
        while exchange.subscriber_count == 0 and time.monotonic() < deadline:  # the stream is open
            time.sleep(0.05)
        assert exchange.subscriber_count > 0
        before = rss_mib()
        with connect(daemon) as s:
            for i in range(100):
                resp = call(s, 2 * i + 1, forward_request(envelope("/hostile/huge", value=b"e" * (3 * MIB + MIB // 2))))
                assert resp.status.code == 0, resp.status.message
        still_served(daemon)
        from pycontainerd.core.events import QUEUE_BYTES

        assert rss_mib() - before < (QUEUE_BYTES + framing.SERVER_BUDGET) // MIB + 64
    finally:
        stream.cancel()
        ch.close()


def test_a_flood_of_forwards_from_a_peer_that_reads_late_is_all_answered(daemon):
    """20000 Forwards pipelined on one connection, answers read only later
    (the daemon stops reading while its answers are not taken, so nothing
    piles up), while other clients are served."""
    count = 20000
    frames = b"".join(framing.encode(2 * i + 1, framing.TYPE_REQUEST, forward_request(envelope(f"/flood/{i}")).SerializeToString())
                      for i in range(count))
    before = rss_mib()
    with connect(daemon, timeout=120) as s:
        writer = threading.Thread(target=s.sendall, args=(frames,), daemon=True)
        writer.start()
        time.sleep(1)
        still_served(daemon)
        assert rss_mib() - before < 64
        seen = set()
        for _ in range(count):
            stream_id, resp = read_response(s)
            assert resp.status.code == 0, resp.status.message
            seen.add(stream_id)
        writer.join(30)
    assert len(seen) == count


# -- hypothesis: whatever the bytes, an answer or a close, and the daemon lives -----

# (stream id, type, flags, body, what the header claims beyond the body's length)
frames = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
                            st.binary(max_size=256), st.integers(-8, 8) | st.integers(0, 2**32 - 1)),
                  min_size=1, max_size=6)
# text the daemon may echo back (a service's name, a topic): never one of the
# markers assert_clean looks for (hypothesis draws string constants it finds
# in the source, "[Errno" among them, and an echoed one is the client's own)
echoable = st.text(max_size=40).filter(lambda t: not any(m in t for m in ("Traceback", "<class", "Error(", "[Errno")))
requests = st.builds(
    Request,
    service=st.sampled_from([EVENTS, "", "containerd.task.v2.Task", "x" * 300]) | echoable,
    method=st.sampled_from(["Forward", "", "Subscribe"]) | echoable,
    payload=st.binary(max_size=512) | st.builds(lambda e: events_pb2.ForwardRequest(envelope=e).SerializeToString(),
                                                st.builds(events_pb2.Envelope, namespace=echoable,
                                                          topic=echoable)),
    timeout_nano=st.integers(-(2**63), 2**63 - 1),
    metadata=st.lists(st.builds(KeyValue, key=st.text(max_size=30), value=st.text(max_size=30)), max_size=3),
)


def exchange_raw(d: InProcessDaemon, data: bytes) -> None:
    """Send `data`, then read answers until the daemon closes or goes quiet;
    each answer must be a well-formed response with a bounded status."""
    with connect(d, timeout=1.0) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return
        while True:
            try:
                header = s.recv(framing.HEADER_LENGTH, socket.MSG_WAITALL)
            except (socket.timeout, ConnectionResetError):
                return
            if not header:
                return
            length, _sid, type_, _flags = struct.unpack(">IIBB", header)
            assert type_ == framing.TYPE_RESPONSE and length <= framing.MAX_MESSAGE
            resp = Response.FromString(recv_exactly(s, length))
            assert 0 <= resp.status.code <= 16
            assert_clean(resp, d)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames)
def test_hypothesis_raw_frames(daemon, parts):
    data = b"".join(struct.pack(">IIBB", min(max(0, len(body) + extra), 2**32 - 1), sid, type_, flags) + body
                    for sid, type_, flags, body, extra in parts)
    exchange_raw(daemon, data)
    with connect(daemon) as s:
        assert call(s, 1, forward_request(envelope())).status.code == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), requests), min_size=1, max_size=4))
def test_hypothesis_requests(daemon, calls):
    data = b"".join(framing.encode(sid, framing.TYPE_REQUEST, req.SerializeToString()) for sid, req in calls)
    exchange_raw(daemon, data)
    with connect(daemon) as s:
        assert call(s, 1, forward_request(envelope())).status.code == 0


# -- the library's per-connection bound, with a slow handler -----------------------


def test_one_connection_runs_at_most_max_inflight_calls():
    """1000 requests to a handler that waits: at most MAX_INFLIGHT run at
    once; the rest wait unread in the socket, and all are answered."""
    from pycontainerd.pkg.ttrpc import server as server_mod

    d = short_tempdir("pcd-ttrpc-")
    path = os.path.join(d, "s")
    running = {"now": 0, "most": 0}

    async def slow(ctx: CallContext, payload: bytes):
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1
        return empty_pb2.Empty()

    async def body():
        srv = Server()
        srv.register("t.Slow", {"Wait": slow})
        await srv.listen(path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            for i in range(1000):
                writer.write(framing.encode(2 * i + 1, framing.TYPE_REQUEST,
                                            Request(service="t.Slow", method="Wait").SerializeToString()))
            answered = 0
            while answered < 1000:
                _, data = await framing.read_message(reader)
                assert Response.FromString(data).status.code == 0
                answered += 1
            writer.close()
        finally:
            await srv.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 120))
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    assert 1 < running["most"] <= server_mod.MAX_INFLIGHT
