"""pkg/ttrpc: framing, the client and the server against each other over a
real UNIX socket, raw peers speaking bytes, and the real
containerd-shim-runc-v2's ttrpc server (see tests/e2e/test_e2e_runtime_v2.py
for the full Task service)."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile

import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.ttrpc import CallContext, Client, Closed, Server, StatusError, framing
from pycontainerd.pkg.ttrpc.messages import KeyValue, Request, Response, Status

SERVICE = "test.Echo"


@pytest.fixture
def sock_dir():
    d = tempfile.mkdtemp(prefix="pcd-ttrpc-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_server(seen: list | None = None) -> Server:
    server = Server()

    async def echo(ctx: CallContext, payload: bytes):
        if seen is not None:
            seen.append(ctx)
        return wrappers_pb2.StringValue(value=wrappers_pb2.StringValue.FromString(payload).value)

    async def sleep(ctx: CallContext, payload: bytes):
        await asyncio.sleep(wrappers_pb2.DoubleValue.FromString(payload).value)
        return empty_pb2.Empty()

    async def fail(ctx: CallContext, payload: bytes):
        raise errdefs.NotFound(f"thing {wrappers_pb2.StringValue.FromString(payload).value}")

    async def crash(ctx: CallContext, payload: bytes):
        raise ZeroDivisionError("secret internals")

    async def big(ctx: CallContext, payload: bytes):
        return wrappers_pb2.BytesValue(value=b"x" * (framing.MAX_MESSAGE + 1))

    server.register(SERVICE, {"Echo": echo, "Sleep": sleep, "Fail": fail, "Crash": crash, "Big": big})
    return server



def test_envelope_schema_is_ttrpcs():
    """Request, Response and KeyValue have ttrpc's field names, numbers and
    types (the protobuf tags of its Go types.go), read back from the descriptor the library
    hands to protobuf's pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    from pycontainerd.pkg.ttrpc import messages

    fd = descriptor_pb2.FileDescriptorProto.FromString(
        descriptor_pool.Default().FindFileByName(messages.FILE_NAME).serialized_pb
    )
    F = descriptor_pb2.FieldDescriptorProto
    schema = {
        m.name: [(f.name, f.number, F.Label.Name(f.label), F.Type.Name(f.type), f.type_name) for f in m.field]
        for m in fd.message_type
    }
    assert (fd.package, fd.syntax, list(fd.dependency)) == ("ttrpc", "proto3", ["google/rpc/status.proto"])
    assert schema == {
        "KeyValue": [("key", 1, "LABEL_OPTIONAL", "TYPE_STRING", ""), ("value", 2, "LABEL_OPTIONAL", "TYPE_STRING", "")],
        "Request": [
            ("service", 1, "LABEL_OPTIONAL", "TYPE_STRING", ""),
            ("method", 2, "LABEL_OPTIONAL", "TYPE_STRING", ""),
            ("payload", 3, "LABEL_OPTIONAL", "TYPE_BYTES", ""),
            ("timeout_nano", 4, "LABEL_OPTIONAL", "TYPE_INT64", ""),
            ("metadata", 5, "LABEL_REPEATED", "TYPE_MESSAGE", ".ttrpc.KeyValue"),
        ],
        "Response": [
            ("status", 1, "LABEL_OPTIONAL", "TYPE_MESSAGE", ".google.rpc.Status"),
            ("payload", 2, "LABEL_OPTIONAL", "TYPE_BYTES", ""),
        ],
    }
    # and the classes speak it: Response.status is google.rpc.Status
    r = Response(status=Status(code=5, message="not found"), payload=b"p")
    assert Response.FromString(r.SerializeToString()) == r
    assert type(r.status) is Status

def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def with_pair(sock_dir: str, body, seen: list | None = None):
    path = os.path.join(sock_dir, "s")
    server = make_server(seen)
    await server.listen(path)
    client = await Client.connect(path)
    try:
        return await body(client, path)
    finally:
        await client.close()
        await server.close()


# -- framing -----------------------------------------------------------------


def test_header_layout_is_ttrpcs():
    frame = framing.encode(7, framing.TYPE_RESPONSE, b"abc")
    assert frame == b"\x00\x00\x00\x03" + b"\x00\x00\x00\x07" + b"\x02" + b"\x00" + b"abc"
    assert framing.decode_header(frame[:10]) == framing.Header(3, 7, 2, 0)


def test_read_message_round_trip_and_oversize_skipped():
    async def body():
        reader = asyncio.StreamReader(limit=framing.MAX_MESSAGE * 2)
        reader.feed_data(framing.encode(1, 1, b"one"))
        reader.feed_data(struct.pack(">IIBB", framing.MAX_MESSAGE + 1, 3, 1, 0) + b"y" * (framing.MAX_MESSAGE + 1))
        reader.feed_data(framing.encode(5, 1, b"two"))
        reader.feed_eof()
        assert await framing.read_message(reader) == (framing.Header(3, 1, 1), b"one")
        with pytest.raises(framing.Oversized, match="message length 4194305 exceed maximum message size of 4194304"):
            await framing.read_message(reader)
        assert await framing.read_message(reader) == (framing.Header(3, 5, 1), b"two")
        with pytest.raises(asyncio.IncompleteReadError):
            await framing.read_message(reader)

    run(body())


def test_envelope_field_numbers():
    req = Request(service="s", method="m", payload=b"p", timeout_nano=5, metadata=[KeyValue(key="k", value="v")])
    assert req.SerializeToString() == b"\n\x01s\x12\x01m\x1a\x01p \x05*\x06\n\x01k\x12\x01v"
    resp = Response(status=Status(code=5, message="x"), payload=b"q")
    assert resp.SerializeToString() == b"\n\x05\x08\x05\x12\x01x\x12\x01q"


# -- client <-> server -------------------------------------------------------


def test_call_metadata_namespace_and_deadline(sock_dir):
    seen: list[CallContext] = []

    async def body(client: Client, _):
        out = await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="hi"), wrappers_pb2.StringValue,
                                namespace="ns1", metadata=[("X-Key", "a")], timeout=30)
        assert out.value == "hi"
        ctx = seen[0]
        assert ctx.namespace == "ns1"
        assert ctx.metadata["x-key"] == ["a"]
        assert ctx.deadline is not None and 0 < ctx.timeout() <= 30

    run(with_pair(sock_dir, body, seen))


def test_concurrent_calls_are_multiplexed(sock_dir):
    async def body(client: Client, _):
        slow = asyncio.ensure_future(client.call(SERVICE, "Sleep", wrappers_pb2.DoubleValue(value=60), empty_pb2.Empty, timeout=120))
        # fifty answers arrive while the first call is still pending on the same connection
        outs = await asyncio.gather(*(
            client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value=str(i)), wrappers_pb2.StringValue)
            for i in range(50)
        ))
        assert [o.value for o in outs] == [str(i) for i in range(50)]
        assert not slow.done()
        slow.cancel()

    run(with_pair(sock_dir, body))


def test_client_deadline_enforced(sock_dir):
    async def body(client: Client, _):
        with pytest.raises(errdefs.DeadlineExceeded):
            await client.call(SERVICE, "Sleep", wrappers_pb2.DoubleValue(value=30), empty_pb2.Empty, timeout=0.2)
        # the connection is still usable after a call timed out
        out = await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="ok"), wrappers_pb2.StringValue)
        assert out.value == "ok"

    run(with_pair(sock_dir, body))


def test_server_enforces_timeout_nano(sock_dir):
    """A request whose timeout_nano runs out on the server is answered
    DEADLINE_EXCEEDED by the server itself (raw client: no local deadline)."""
    path = os.path.join(sock_dir, "s")

    async def body():
        server = make_server()
        await server.listen(path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            req = Request(service=SERVICE, method="Sleep", payload=wrappers_pb2.DoubleValue(value=30).SerializeToString(),
                          timeout_nano=100_000_000)
            writer.write(framing.encode(1, framing.TYPE_REQUEST, req.SerializeToString()))
            header, data = await framing.read_message(reader)
            assert header.stream_id == 1 and header.type == framing.TYPE_RESPONSE
            assert Response.FromString(data).status.code == 4  # DEADLINE_EXCEEDED
            writer.close()
        finally:
            await server.close()

    run(body())


def test_errors_map_to_errdefs(sock_dir):
    async def body(client: Client, _):
        with pytest.raises(errdefs.NotFound) as exc:
            await client.call(SERVICE, "Fail", wrappers_pb2.StringValue(value="x"), empty_pb2.Empty)
        assert str(exc.value) == "thing x: not found"
        with pytest.raises(errdefs.Unknown) as unk:
            await client.call(SERVICE, "Crash", empty_pb2.Empty(), empty_pb2.Empty)
        assert "secret" not in str(unk.value) and "ZeroDivision" not in str(unk.value)
        with pytest.raises(errdefs.NotImplementedErr) as svc:
            await client.call("no.Such", "X", empty_pb2.Empty(), empty_pb2.Empty)
        assert svc.value.message == "service no.Such"
        with pytest.raises(errdefs.NotImplementedErr) as mth:
            await client.call(SERVICE, "Nope", empty_pb2.Empty(), empty_pb2.Empty)
        assert mth.value.message == "method Nope"

    run(with_pair(sock_dir, body))


def test_oversize_both_ways(sock_dir):
    async def body(client: Client, _):
        with pytest.raises(StatusError, match="exceed maximum message size of 4194304") as sent:
            await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="x" * framing.MAX_MESSAGE), wrappers_pb2.StringValue)
        assert sent.value.code == 8  # RESOURCE_EXHAUSTED
        with pytest.raises(StatusError, match="exceed maximum message size") as got:
            await client.call(SERVICE, "Big", empty_pb2.Empty(), wrappers_pb2.BytesValue, timeout=30)
        assert got.value.code == 8
        out = await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="after"), wrappers_pb2.StringValue)
        assert out.value == "after"

    run(with_pair(sock_dir, body))


def test_server_closing_fails_pending_calls(sock_dir):
    path = os.path.join(sock_dir, "s")

    async def body():
        server = make_server()
        await server.listen(path)
        client = await Client.connect(path)
        pending = asyncio.ensure_future(client.call(SERVICE, "Sleep", wrappers_pb2.DoubleValue(value=60), empty_pb2.Empty))
        await asyncio.sleep(0.1)
        await server.close()
        with pytest.raises(Closed, match="ttrpc: closed"):
            await pending
        with pytest.raises(Closed):
            await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="x"), wrappers_pb2.StringValue)
        assert client.closed
        await client.close()

    run(body())


def test_connect_to_nothing_is_unavailable(sock_dir):
    with pytest.raises(errdefs.Unavailable, match="ttrpc: connect"):
        run(Client.connect(os.path.join(sock_dir, "absent")))


def test_malformed_peers_do_not_crash_the_server(sock_dir):
    """Garbage, a truncated header, an undecodable request, an even stream
    id, an oversized frame: each is answered or dropped, and a well-behaved
    client on another connection keeps being served."""
    path = os.path.join(sock_dir, "s")

    async def body():
        server = make_server()
        await server.listen(path)
        try:
            for junk in (b"\xff" * 7, b"\x00\x00\x00\x05\x00\x00\x00\x01\x01\x00\xff\xff\xff\xff\xff"):
                r, w = await asyncio.open_unix_connection(path)
                w.write(junk)
                w.close()
            r, w = await asyncio.open_unix_connection(path)
            w.write(framing.encode(1, framing.TYPE_REQUEST, b"\xff\xff\xff\xff\xff"))
            header, data = await framing.read_message(r)
            status = Response.FromString(data).status
            assert (header.stream_id, status.code) == (1, 3) and status.message.startswith("unmarshal request error")
            even = Request(service=SERVICE, method="Echo").SerializeToString()
            w.write(framing.encode(2, framing.TYPE_REQUEST, even))
            header, data = await framing.read_message(r)
            assert Response.FromString(data).status.message == "StreamID must be odd for client initiated streams"
            w.write(struct.pack(">IIBB", framing.MAX_MESSAGE + 10, 3, 1, 0) + b"z" * (framing.MAX_MESSAGE + 10))
            header, data = await framing.read_message(r)
            assert header.stream_id == 3 and Response.FromString(data).status.code == 8
            w.write(framing.encode(9, 7, b"unknown type"))  # ignored
            ok = Request(service=SERVICE, method="Echo", payload=wrappers_pb2.StringValue(value="still").SerializeToString())
            w.write(framing.encode(5, framing.TYPE_REQUEST, ok.SerializeToString()))
            header, data = await framing.read_message(r)
            assert header.stream_id == 5
            assert wrappers_pb2.StringValue.FromString(Response.FromString(data).payload).value == "still"
            w.close()
            client = await Client.connect(path)
            out = await client.call(SERVICE, "Echo", wrappers_pb2.StringValue(value="alive"), wrappers_pb2.StringValue)
            assert out.value == "alive"
            await client.close()
        finally:
            await server.close()

    run(body())


def test_client_ignores_unknown_stream_and_bad_response(sock_dir):
    """A server answering on a stream nobody asked for is ignored; the
    client's stream ids are odd and increasing."""
    path = os.path.join(sock_dir, "s")
    ids: list[int] = []

    async def fake(reader, writer):
        for _ in range(2):
            header, data = await framing.read_message(reader)
            ids.append(header.stream_id)
            writer.write(framing.encode(header.stream_id + 100, framing.TYPE_RESPONSE, b""))
            resp = Response(payload=wrappers_pb2.StringValue(value="r").SerializeToString())
            writer.write(framing.encode(header.stream_id, framing.TYPE_RESPONSE, resp.SerializeToString()))
        await writer.drain()

    async def body():
        srv = await asyncio.start_unix_server(fake, path)
        client = await Client.connect(path)
        for _ in range(2):
            out = await client.call(SERVICE, "Echo", empty_pb2.Empty(), wrappers_pb2.StringValue)
            assert out.value == "r"
        assert ids == [1, 3]
        await client.close()
        srv.close()

    run(body())


# -- the real shim -------------------------------------------------------------

SHIM = shutil.which("containerd-shim-runc-v2")


@pytest.mark.skipif(SHIM is None or os.geteuid() != 0, reason="needs containerd-shim-runc-v2 and root")
def test_real_shim_speaks_our_ttrpc():
    """Start Debian's shim with its `start` action in a bundle, as containerd
    does, connect to the address it prints, and call it: an unknown method
    gets ttrpc's Go wording (UNIMPLEMENTED "method Nope"), an unknown service
    "service ...", and Shutdown (no task) makes it exit. The shim is found
    and reaped by the pid on the other end of our socket."""
    import subprocess

    base = tempfile.mkdtemp(prefix="pcd-shim-", dir="/tmp")
    bundle = os.path.join(base, "b")
    os.mkdir(bundle)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        f.write("{}")
    os.mkfifo(os.path.join(bundle, "log"), 0o700)
    log_fd = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK)
    argv = [SHIM, "-namespace", "ttrpc-test", "-address", os.path.join(base, "grpc.sock"),
            "-publish-binary", "/bin/true", "-id", "t1", "start"]
    env = dict(os.environ, TTRPC_ADDRESS=os.path.join(base, "grpc.sock.ttrpc"), GOMAXPROCS="2")
    out = subprocess.run(argv, cwd=bundle, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=True)
    address = out.stdout.decode().strip()
    assert address.startswith("unix:///run/containerd/s/")
    with open(os.path.join(bundle, "address")) as f:
        assert f.read() == address  # the shim records its address in the bundle itself
    shim_pid = 0

    async def body():
        nonlocal shim_pid
        client = await Client.connect(address, timeout=10)
        shim_pid = client.peer_pid()
        assert shim_pid > 0
        try:
            with pytest.raises(errdefs.NotImplementedErr) as exc:
                await client.call("containerd.task.v2.Task", "Nope", empty_pb2.Empty(), empty_pb2.Empty, timeout=10)
            assert exc.value.message == "method Nope"
            with pytest.raises(errdefs.NotImplementedErr) as exc:
                await client.call("no.Such", "Nope", empty_pb2.Empty(), empty_pb2.Empty, timeout=10, namespace="ttrpc-test")
            assert exc.value.message == "service no.Such"
            try:  # ShutdownRequest{} encodes as nothing, like Empty
                await client.call("containerd.task.v2.Task", "Shutdown", empty_pb2.Empty(), empty_pb2.Empty, timeout=10)
            except Closed:
                pass  # it may exit before its answer is flushed
            await asyncio.wait_for(client.wait_closed(), 20)
        finally:
            await client.close()

    try:
        run(body())
        for _ in range(200):
            if not os.path.exists(f"/proc/{shim_pid}") or open(f"/proc/{shim_pid}/stat").read().split()[2] == "Z":
                break
            import time

            time.sleep(0.05)
        else:
            pytest.fail(f"shim {shim_pid} still running after Shutdown")
    finally:
        if shim_pid and os.path.exists(f"/proc/{shim_pid}"):
            try:
                os.kill(shim_pid, 9)
            except ProcessLookupError:
                pass
        os.close(log_fd)
        path = address.removeprefix("unix://")
        if os.path.exists(path):
            os.unlink(path)
        shutil.rmtree(base, ignore_errors=True)
