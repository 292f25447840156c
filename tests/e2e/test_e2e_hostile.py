"""What the real daemon answers to hostile input, through its gRPC socket.

Each answer must be one of containerd's codes with a short message free of
Python internals, and the daemon must keep serving everyone else meanwhile.
The answers that a real containerd 1.6 gives to the same bytes (measured
with tests/e2e's containerd) are noted where we follow them.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from e2e_support import until_subscribed
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.api.types import mount_pb2

pytestmark = pytest.mark.e2e

# The wall-clock bounds these tests exist for (the issue asks for them).
# Measured here before the fixes: Version waited 1.6-5 s, another client
# 4-28 s, a ~= list 20 s, 20 publishes 8.6 s; after them: 0.01-0.45 s. The
# bound sits between, with room for a loaded 2-core CI machine.
STALL_BOUND = 2.5  # seconds
NS = (("containerd-namespace", "default"),)
MAX_DETAILS = 4096  # what the daemon promises for any error message
MIB = "a" * (1 << 20)


@pytest.fixture
def served(daemon):
    d = daemon()
    channel = grpc.insecure_channel("unix:" + d.address)
    try:
        yield d, channel
    finally:
        channel.close()


def failure(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)  # a streamed answer fails while it is read
    return info.value


def assert_clean(err: grpc.RpcError, daemon) -> None:
    details = err.details() or ""
    assert len(details.encode()) <= MAX_DETAILS, len(details)
    for leak in ("Traceback", "<class", "Error(", "[Errno", daemon.root, daemon.state):
        assert leak not in details, details


# -- 1. filters run in linear time, and never hold the loop ---------------------------


def test_backtracking_regexp_filter_does_not_stall_the_daemon(served):
    d, channel = served
    leases = leases_pb2_grpc.LeasesStub(channel)
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)
    version = version_pb2_grpc.VersionStub(channel)
    evil = "a" * 27 + "!"  # ^(a+)+$ backtracks ~2**27 times on this in Python's re
    for i in range(3):
        leases.Create(leases_pb2.CreateRequest(id=f"l{i}", labels={"x": evil}), metadata=NS, timeout=10)
        namespaces.Create(namespace_pb2.CreateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=f"n{i}", labels={"x": evil})), timeout=10)
    leases.Create(leases_pb2.CreateRequest(id="match", labels={"x": "aaaa"}), metadata=NS, timeout=10)

    answers: dict[str, object] = {}

    def list_with(name, call):
        started = time.monotonic()
        answers[name] = call()
        answers[name + " took"] = time.monotonic() - started

    threads = [
        threading.Thread(target=list_with, args=("leases", lambda: leases.List(
            leases_pb2.ListRequest(filters=["labels.x~=^(a+)+$"]), metadata=NS, timeout=60))),
        threading.Thread(target=list_with, args=("namespaces", lambda: namespaces.List(
            namespace_pb2.ListNamespacesRequest(filter="labels.x~=^(a+)+$"), timeout=60))),
    ]
    for t in threads:
        t.start()
    # the wall-clock bound this test exists for: Version answers at once
    # while those filters run (before RE2, it waited ~4 s per row)
    started = time.monotonic()
    version.Version(empty_pb2.Empty(), timeout=30)
    assert time.monotonic() - started < STALL_BOUND
    for t in threads:
        t.join(60)
    assert [x.id for x in answers["leases"].leases] == ["match"]
    assert [x.name for x in answers["namespaces"].namespaces] == []
    assert answers["leases took"] < STALL_BOUND and answers["namespaces took"] < STALL_BOUND


# -- 2. containerd's codes, never Python internals ------------------------------------


@pytest.mark.parametrize("method", [
    "/containerd.services.leases.v1.Leases/Create",
    "/containerd.services.version.v1.Version/Version",
    "/containerd.services.namespaces.v1.Namespaces/Get",
])
def test_corrupt_request_bytes_get_grpc_gos_answer(served, method):
    d, channel = served
    raw = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    err = failure(raw, b"\xff\xff\xff", metadata=NS, timeout=10)
    # containerd 1.6 (grpc-go) answers exactly this code and prefix
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details().startswith("grpc: error unmarshalling request: ")
    assert_clean(err, d)


def test_corrupt_streamed_request_gets_grpc_gos_answer(served):
    d, channel = served
    write = channel.stream_stream("/containerd.services.content.v1.Content/Write",
                                  request_serializer=None, response_deserializer=None)
    err = failure(write, iter([b"\x0a\x05ab"]), metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details().startswith("grpc: failed to unmarshal the received message ")
    assert_clean(err, d)
    listing = channel.unary_stream("/containerd.services.content.v1.Content/List",
                                   request_serializer=None, response_deserializer=None)
    err = failure(listing, b"\xff", metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert_clean(err, d)


def test_forwarded_timestamps_out_of_range_or_missing(served):
    d, channel = served
    events = events_pb2_grpc.EventsStub(channel)
    for seconds in (-(10 ** 15), 10 ** 15):
        env = events_pb2.Envelope(namespace="x", topic="/a/b", timestamp=timestamp_pb2.Timestamp(seconds=seconds))
        err = failure(events.Forward, events_pb2.ForwardRequest(envelope=env), timeout=10)
        assert err.code() == grpc.StatusCode.INTERNAL  # containerd's decoder refuses it the same way
        assert err.details().startswith("grpc: error unmarshalling request: timestamp: ")
        assert_clean(err, d)
    env = events_pb2.Envelope(namespace="x", topic="/a/b")
    err = failure(events.Forward, events_pb2.ForwardRequest(envelope=env), timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "timestamp must be set on forwarded event: invalid argument"


def test_content_write_refuses_unknown_actions_and_negative_offsets(served):
    d, channel = served
    content = content_pb2_grpc.ContentStub(channel)
    err = failure(content.Write, iter([content_pb2.WriteContentRequest(action=7, ref="r1")]), metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "unknown write action 7: invalid argument"
    err = failure(content.Write, iter([
        content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref="r2", offset=-5, data=b"x"),
    ]), metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "write offset -5 must not be negative: invalid argument"
    # a later message of the stream is checked as well
    err = failure(content.Write, iter([
        content_pb2.WriteContentRequest(action=content_pb2.STAT, ref="r3"),
        content_pb2.WriteContentRequest(action=99, ref="r3"),
    ]), metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_diff_filesystem_errors_name_no_daemon_paths(served):
    d, channel = served
    diff = diff_pb2_grpc.DiffStub(channel)
    missing = [mount_pb2.Mount(type="bind", source="/nonexistent-h3", options=["rbind", "ro"])]
    err = failure(diff.Diff, diff_pb2.DiffRequest(left=missing, right=missing), metadata=NS, timeout=30)
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert err.details().startswith("failed to mount containerd-mount")
    assert "/nonexistent-h3" in err.details()  # the caller's own path may be named
    assert err.details().endswith(": no such file or directory")  # the errno in Go's (lower case) words
    assert_clean(err, d)


# -- 3. bounded messages --------------------------------------------------------------


def test_a_huge_name_gets_the_real_error_with_a_short_message(served):
    d, channel = served
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)
    leases = leases_pb2_grpc.LeasesStub(channel)
    snapshots = snapshots_pb2_grpc.SnapshotsStub(channel)
    content = content_pb2_grpc.ContentStub(channel)
    cases = [
        (namespaces.Get, namespace_pb2.GetNamespaceRequest(name=MIB), grpc.StatusCode.NOT_FOUND),
        (leases.Delete, leases_pb2.DeleteRequest(id=MIB), grpc.StatusCode.NOT_FOUND),
        (leases.Create, leases_pb2.CreateRequest(id=MIB), grpc.StatusCode.INVALID_ARGUMENT),
        (snapshots.Stat, snapshots_pb2.StatSnapshotRequest(key=MIB), grpc.StatusCode.NOT_FOUND),
        (snapshots.Stat, snapshots_pb2.StatSnapshotRequest(snapshotter=MIB, key="k"),
         grpc.StatusCode.INVALID_ARGUMENT),
        (content.Status, content_pb2.StatusRequest(ref=MIB), grpc.StatusCode.NOT_FOUND),
        (content.Info, content_pb2.InfoRequest(digest=MIB), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, request, code in cases:
        err = failure(call, request, metadata=NS, timeout=10)
        assert err.code() == code, (call, err.details()[:200])
        assert_clean(err, d)


# -- 4. identifiers, topics, envelope namespaces, label limits -------------------------


def test_lease_ids_are_bounded_and_printable_but_not_held_to_the_identifier_rule(served):
    d, channel = served
    leases = leases_pb2_grpc.LeasesStub(channel)
    for bad in ("a\nb", "x" * 256):
        err = failure(leases.Create, leases_pb2.CreateRequest(id=bad), metadata=NS, timeout=10)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().endswith("must be at most 255 bytes with no control characters: invalid argument")
    # containerd's own clients make ids like these (leases.WithRandomID):
    # the identifier rule would refuse them, containerd stores them
    for made_by_ctr in ("187-ab_-", "42-_x9-", "a b"):
        assert leases.Create(leases_pb2.CreateRequest(id=made_by_ctr), metadata=NS, timeout=10).lease.id == made_by_ctr
    # an id the daemon makes up is fine
    assert leases.Create(leases_pb2.CreateRequest(), metadata=NS, timeout=10).lease.id


def test_event_topics_and_envelopes_as_containerd_checks_them(served):
    d, channel = served
    events = events_pb2_grpc.EventsStub(channel)
    # the messages are containerd 1.6's, measured on a real one
    expected = {
        "abc": "envelope topic \"abc\": must start with '/': invalid argument",
        "": 'envelope topic "": must not be empty: invalid argument',
        "/a b/c": 'envelope topic "/a b/c": failed validation on component "a b": identifier "a b" must match '
                  '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument',
        "/a/": 'envelope topic "/a/": failed validation on component "": identifier must not be empty: '
               'invalid argument',
    }
    for topic, message in expected.items():
        err = failure(events.Publish, events_pb2.PublishRequest(topic=topic), metadata=NS, timeout=10)
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    err = failure(events.Publish, events_pb2.PublishRequest(topic="/" + "a" * 100_000), metadata=NS, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_clean(err, d)
    now = timestamp_pb2.Timestamp(seconds=int(time.time()))
    for ns, message in (("a b", 'event envelope has invalid namespace: identifier "a b" must match '
                                '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument'),
                        ("", "event envelope has invalid namespace: identifier must not be empty: invalid argument")):
        env = events_pb2.Envelope(namespace=ns, topic="/a", timestamp=now)
        err = failure(events.Forward, events_pb2.ForwardRequest(envelope=env), timeout=10)
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_label_limits_are_checked_before_any_metadata_work(served):
    d, channel = served
    leases = leases_pb2_grpc.LeasesStub(channel)
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)
    snapshots = snapshots_pb2_grpc.SnapshotsStub(channel)
    many = {f"k{i}": "v" for i in range(100_000)}
    err = failure(leases.Create, leases_pb2.CreateRequest(id="many", labels=many), metadata=NS, timeout=30)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "too many labels: 100000 (at most 4096 per object): invalid argument")
    err = failure(namespaces.Create, namespace_pb2.CreateNamespaceRequest(
        namespace=namespace_pb2.Namespace(name="many", labels=many)), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = failure(snapshots.Prepare, snapshots_pb2.PrepareSnapshotRequest(key="many", labels=many),
                  metadata=NS, timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    big = {f"k{i}": "v" * 4000 for i in range(300)}  # each fine, 1.2 MB in all
    err = failure(leases.Create, leases_pb2.CreateRequest(id="big", labels=big), metadata=NS, timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "labels too large" in err.details()
    # containerd's own per-label limit, in bytes: 2 + 4095 bytes is over
    err = failure(leases.Create, leases_pb2.CreateRequest(id="one", labels={"ké": "v" * 4094}),
                  metadata=NS, timeout=10)
    assert err.details() == ("label key and value greater than maximum size (4096 bytes), key: ké: "
                             "invalid argument")
    # nothing was created by the refused requests
    listed = leases.List(leases_pb2.ListRequest(), metadata=NS, timeout=10).leases
    assert [x.id for x in listed] == []
    # and generous sets pass
    fine = {f"containerd.io/gc.ref.content.l.{i}": "sha256:" + "0" * 64 for i in range(500)}
    assert len(leases.Create(leases_pb2.CreateRequest(id="fine", labels=fine), metadata=NS,
                             timeout=30).lease.labels) == 500


# -- 5. heavy filters and stalled subscribers cost their sender, not everyone -----------



def _version_latencies(channel, busy: threading.Thread) -> list[float]:
    """Version's answer times while `busy` runs."""
    version = version_pb2_grpc.VersionStub(channel)
    seen = []
    while busy.is_alive():
        started = time.monotonic()
        version.Version(empty_pb2.Empty(), timeout=30)
        seen.append(time.monotonic() - started)
        time.sleep(0.02)
    return seen


def test_a_heavy_list_holds_neither_the_loop_nor_the_metadata_database(served):
    d, channel = served
    leases = leases_pb2_grpc.LeasesStub(channel)
    heavy_ns = (("containerd-namespace", "heavy"),)
    for i in range(100):
        leases.Create(leases_pb2.CreateRequest(id=f"l{i}", labels={"a": "b"}), metadata=heavy_ns, timeout=10)
    # 50k selectors against each of 100 leases: seconds of matching, which
    # used to run on the metadata database's one thread
    many = [f'labels.a=="no{i}"' for i in range(50_000)]
    answers = {}
    heavy = threading.Thread(target=lambda: answers.update(heavy=leases.List(
        leases_pb2.ListRequest(filters=many), metadata=heavy_ns, timeout=120)))
    heavy.start()
    time.sleep(1.0)  # the heavy call is being served
    assert heavy.is_alive()
    # the wall-clock bounds this test exists for: another client's metadata
    # write, in another namespace, does not wait for that matching (it
    # waited ~4 s), and neither does Version
    started = time.monotonic()
    leases.Create(leases_pb2.CreateRequest(id="other-client"), metadata=NS, timeout=60)
    assert time.monotonic() - started < STALL_BOUND
    assert max(_version_latencies(channel, heavy)) < STALL_BOUND
    heavy.join()
    assert list(answers["heavy"].leases) == []


def test_a_huge_filter_string_is_scanned_off_the_loop(served):
    d, channel = served
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)
    huge = 'labels.a=="' + "a" * (8 << 20) + '"'  # half the receive limit: ~2 s to scan
    answers = {}
    call = threading.Thread(target=lambda: answers.update(listed=namespaces.List(
        namespace_pb2.ListNamespacesRequest(filter=huge), timeout=120)))
    call.start()
    assert max(_version_latencies(channel, call)) < STALL_BOUND  # before: blocked for the whole scan
    call.join()
    assert list(answers["listed"].namespaces) == []


def test_subscribers_with_heavy_filters_do_not_slow_delivery_to_others(served):
    d, channel = served
    events = events_pb2_grpc.EventsStub(channel)
    many = [f'topic=="/nothing/{i}"' for i in range(100_000)]
    heavy_calls = [events.Subscribe(events_pb2.SubscribeRequest(filters=many), metadata=NS, timeout=120)
                   for _ in range(3)]
    got = []

    def live():
        for envelope in events.Subscribe(events_pb2.SubscribeRequest(filters=['topic=="/h/live"']), timeout=120):
            got.append(envelope.topic)
            if len(got) == 20:
                return

    listener = threading.Thread(target=live)
    listener.start()
    time.sleep(3)  # the subscriptions are in place (their filters scanned)

    def publish():
        for _ in range(20):
            events.Publish(events_pb2.PublishRequest(topic="/h/live"), metadata=NS, timeout=60)

    publisher = threading.Thread(target=publish)
    started = time.monotonic()
    publisher.start()
    # each event used to cost the loop ~0.1 s per heavy subscriber: 8.6 s
    # for these 20 publishes, with Version waiting behind them
    assert max(_version_latencies(channel, publisher)) < STALL_BOUND
    assert time.monotonic() - started < 2 * STALL_BOUND
    listener.join(60)
    assert got == ["/h/live"] * 20
    for call in heavy_calls:
        call.cancel()


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def test_a_subscriber_that_stops_reading_does_not_pin_what_is_published(served):
    d, channel = served
    events = events_pb2_grpc.EventsStub(channel)
    stalled_channel = grpc.insecure_channel("unix:" + d.address)
    stalled = events_pb2_grpc.EventsStub(stalled_channel).Subscribe(events_pb2.SubscribeRequest(), timeout=120)
    first = []
    reader = threading.Thread(target=lambda: first.append(next(stalled)))
    reader.start()
    try:
        until_subscribed(d.address, lambda: bool(first))
        reader.join()  # it has read one probe; from now on it reads nothing
        before = _rss_mib(d.pid)
        payload = any_pb2.Any(type_url="x", value=b"\x01" * (8 << 20))
        for _ in range(100):  # 800 MiB in all
            events.Publish(events_pb2.PublishRequest(topic="/h/big", event=payload), metadata=NS, timeout=60)
        grown = _rss_mib(d.pid) - before
        assert grown < 256, f"the daemon holds {grown} MiB more for one stalled subscriber"
        assert version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)
    finally:
        stalled.cancel()
        stalled_channel.close()


def test_a_repeated_namespace_header_counts_once_the_first_as_containerd(served):
    d, channel = served
    leases = leases_pb2_grpc.LeasesStub(channel)
    twice = (("containerd-namespace", "first"), ("containerd-namespace", "second"))
    leases.Create(leases_pb2.CreateRequest(id="l"), metadata=twice, timeout=10)
    listed = {ns: [x.id for x in leases.List(leases_pb2.ListRequest(), metadata=(("containerd-namespace", ns),),
                                             timeout=10).leases] for ns in ("first", "second")}
    assert listed == {"first": ["l"], "second": []}
    # an empty first value is no namespace, whatever follows
    err = failure(leases.List, leases_pb2.ListRequest(),
                  metadata=(("containerd-namespace", ""), ("containerd-namespace", "second")), timeout=10)
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           "namespace is required: failed precondition")
