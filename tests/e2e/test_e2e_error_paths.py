"""Paths the happy tests never take, on the real daemon binary: a plugin
whose close() raises at stop, an event published through Events.Publish,
and a snapshot listing long enough to need more than one batch."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2

from e2e_support import PROBE_FILTER, PROBE_TOPIC, REPO, install_distribution, plugin_rows, until_subscribed

from pycontainerd.api.events import namespace_pb2
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def close_plugin_site(shared_tmp: Path) -> str:
    """A PYTHONPATH entry holding tests/close_plugins, installed."""
    return install_distribution(REPO / "tests" / "close_plugins", shared_tmp)


def test_a_plugin_whose_close_raises_does_not_stop_the_others_closing(daemon, ctr, close_plugin_site):
    d = daemon(env={"PYTHONPATH": close_plugin_site})
    rows = {(t, i): status for t, i, _, status in plugin_rows(ctr(d.address, "plugins", "ls").stdout)}
    assert rows[("io.containerd.internal.v1", "close-raises")] == "ok"
    assert rows[("io.containerd.internal.v1", "close-marker")] == "ok"

    assert d.stop() == 0
    log = d.log()
    failed = [line for line in log.splitlines() if "error closing plugin" in line]
    assert len(failed) == 1, log
    assert "plugin=io.containerd.internal.v1.close-raises" in failed[0]
    assert "the example device will not let go" in failed[0]
    assert "Traceback" not in log
    # closed after the failure: the marker plugin, and the metadata database
    # (sqlite folds its write-ahead log back and removes it on a clean close)
    marker = os.path.join(d.state, "io.containerd.internal.v1.close-marker", "closed")
    assert open(marker).read() == "closed\n"
    meta = os.path.join(d.root, "io.containerd.metadata.v1.sqlite", "meta.db")
    assert os.path.exists(meta) and not os.path.exists(meta + "-wal")
    assert not os.path.exists(d.address)
    assert "stopped" in log.splitlines()[-1]


def test_an_event_published_over_grpc_reaches_a_subscriber(daemon):
    from pycontainerd.client.client import Client

    d = daemon()
    got: list = []
    probed = threading.Event()
    with Client(address=d.address, namespace="team-a") as c:
        stream = c.subscribe('topic=="/pets/adopted"', PROBE_FILTER)

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
        payload = any_pb2.Any(type_url="containerd.events.NamespaceUpdate",
                              value=namespace_pb2.NamespaceUpdate(name="rex", labels={"kind": "dog"}).SerializeToString())
        with grpc.insecure_channel("unix:" + d.address) as ch:
            events_pb2_grpc.EventsStub(ch).Publish(events_pb2.PublishRequest(topic="/pets/adopted", event=payload),
                                                   metadata=(("containerd-namespace", "team-a"),), timeout=10)
        t.join(10)
        stream.close()
    assert len(got) == 1
    env = got[0]
    assert (env.topic, env.namespace) == ("/pets/adopted", "team-a")
    assert env.event.type_url == "containerd.events.NamespaceUpdate"
    update = namespace_pb2.NamespaceUpdate.FromString(env.event.value)
    assert (update.name, dict(update.labels)) == ("rex", {"kind": "dog"})
    assert env.HasField("timestamp") and env.timestamp.seconds > 0


def test_snapshot_list_streams_batches_of_100_and_loses_nothing(daemon, ctr):
    # no collector: nothing holds these snapshots
    d = daemon(config={"disabled_plugins": ["io.containerd.gc.v1.scheduler"]})
    md = (("containerd-namespace", "default"),)
    keys = [f"k{i:03d}" for i in range(250)]
    with grpc.insecure_channel("unix:" + d.address) as ch:
        sn = pb_grpc.SnapshotsStub(ch)
        for key in keys:
            sn.Prepare(pb.PrepareSnapshotRequest(snapshotter="native", key=key), metadata=md)
        batches = [[i.name for i in r.info] for r in sn.List(pb.ListSnapshotsRequest(snapshotter="native"),
                                                               metadata=md)]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert sorted(k for b in batches for k in b) == keys
    # and ctr, which reads the whole stream, lists every one
    rows = ctr(d.address, "snapshots", "--snapshotter", "native", "ls").stdout.decode().splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == keys
