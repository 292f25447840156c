"""The daemon's ttrpc socket (`<grpc address>.ttrpc`): created at start with
a lock beside it, removed at stop, refused when another process serves it,
and serving containerd.services.events.ttrpc.v1.Events/Forward, whose
envelopes reach gRPC subscribers as shims' events do."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

from google.protobuf import any_pb2, timestamp_pb2

from e2e_support import PROBE_FILTER, PROBE_TOPIC, until_subscribed
from pycontainerd.api.events import namespace_pb2
from pycontainerd.api.services.events.v1 import events_pb2
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.ttrpc import Client

EVENTS = "containerd.services.events.ttrpc.v1.Events"


def forward(path: str, envelope: events_pb2.Envelope):
    async def body():
        client = await Client.connect(path, timeout=10)
        try:
            from google.protobuf import empty_pb2

            return await client.call(EVENTS, "Forward", events_pb2.ForwardRequest(envelope=envelope),
                                      empty_pb2.Empty, timeout=10)
        finally:
            await client.close()

    return asyncio.run(body())


def test_ttrpc_socket_lifecycle(daemon):
    d = daemon()
    ttrpc_path = d.address + ".ttrpc"
    assert os.path.exists(ttrpc_path) and os.path.exists(ttrpc_path + ".lock")
    assert oct(os.stat(ttrpc_path).st_mode & 0o777) == "0o660"
    assert d.stop() == 0
    assert not os.path.exists(ttrpc_path) and not os.path.exists(ttrpc_path + ".lock")


def test_a_live_ttrpc_socket_is_refused(daemon):
    """Something else listening on the ttrpc path: the start is refused and
    its socket is left alone."""
    base = daemon.tempdir()
    run = os.path.join(base, "run")
    os.makedirs(run)
    grpc_path = os.path.join(run, "pcd.sock")
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(grpc_path + ".ttrpc")
    squatter.listen(1)
    try:
        d = daemon(config={"grpc": {"address": grpc_path}}, wait=False)
        assert d.wait_exit() != 0
        assert f"another process is serving {grpc_path}.ttrpc" in d.log()
        assert os.path.exists(grpc_path + ".ttrpc")
    finally:
        squatter.close()


def test_forward_over_ttrpc_reaches_subscribers(daemon):
    from pycontainerd.client.client import Client as GrpcClient

    d = daemon()
    got: list = []
    probed = threading.Event()
    with GrpcClient(address=d.address, namespace="team-a") as c:
        stream = c.subscribe('topic=="/tasks/exit"', PROBE_FILTER)

        def collect():
            for env in stream:
                if env.topic == PROBE_TOPIC:
                    probed.set()
                else:
                    got.append(env)
                    return

        t = threading.Thread(target=collect, daemon=True)
        t.start()
        until_subscribed(d.address, probed.is_set)
        ts = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5)
        event = any_pb2.Any(type_url="containerd.events.NamespaceUpdate",
                            value=namespace_pb2.NamespaceUpdate(name="x").SerializeToString())
        forward(d.address + ".ttrpc", events_pb2.Envelope(timestamp=ts, namespace="team-a", topic="/tasks/exit", event=event))
        t.join(10)
        stream.close()
    assert len(got) == 1
    env = got[0]
    assert (env.namespace, env.topic, env.event.type_url) == ("team-a", "/tasks/exit", event.type_url)
    assert env.timestamp.seconds == 1_700_000_000


def test_forward_without_timestamp_is_invalid(daemon):
    d = daemon()
    try:
        forward(d.address + ".ttrpc", events_pb2.Envelope(namespace="n", topic="/tasks/exit"))
    except errdefs.InvalidArgument as exc:
        assert "timestamp must be set" in str(exc)
    else:
        raise AssertionError("a forward without a timestamp was accepted")
