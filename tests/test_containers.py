"""The containers service in a daemon running in-process, over its gRPC
socket: create, get, list and list-stream with containerd's filters,
update with field masks, delete, the /containers/* events, namespaces,
containerd 1.6's validation and wording, hostile input (bad ids, huge
labels, duplicates, unknown masks), and what a container holds from the
garbage collector."""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, field_mask_pb2

from pycontainerd.api.events import container_pb2
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.client.leases import Leases
from pycontainerd.client.snapshots import Snapshots
from pycontainerd.pkg import errdefs
from pycontainerd.testing import InProcessDaemon

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
RUNC = "io.containerd.runc.v2"


def spec(text: bytes = b'{"ociVersion":"1.0.2"}') -> any_pb2.Any:
    return any_pb2.Any(type_url=SPEC_URL, value=text)


def container(cid, runtime=RUNC, spec_any=None, labels=None, image="", snapshotter="", snapshot_key="",
              extensions=None, options=None, no_spec=False) -> pb.Container:
    c = pb.Container(id=cid, labels=labels or {}, image=image, snapshotter=snapshotter, snapshot_key=snapshot_key)
    c.runtime.name = runtime
    if options is not None:
        c.runtime.options.CopyFrom(options)
    if not no_spec:
        c.spec.CopyFrom(spec_any or spec())
    for k, v in (extensions or {}).items():
        c.extensions[k].CopyFrom(v)
    return c


@pytest.fixture(scope="module")
def daemon():
    with InProcessDaemon() as d:
        yield d


class Containers:
    """The raw Containers stub in one namespace; calls return the response
    or raise grpc.RpcError."""

    def __init__(self, client, ns: str):
        self.client = client
        self.ns = ns
        self.stub = pb_grpc.ContainersStub(client.channel)
        self.md = (("containerd-namespace", ns),)

    def create(self, c: pb.Container) -> pb.Container:
        return self.stub.Create(pb.CreateContainerRequest(container=c), metadata=self.md).container

    def get(self, cid):
        return self.stub.Get(pb.GetContainerRequest(id=cid), metadata=self.md).container

    def ids(self, *filters):
        return [c.id for c in self.stub.List(pb.ListContainersRequest(filters=filters), metadata=self.md).containers]

    def stream_ids(self, *filters):
        return [m.container.id for m in self.stub.ListStream(pb.ListContainersRequest(filters=filters),
                                                             metadata=self.md)]

    def update(self, c, *paths):
        req = pb.UpdateContainerRequest(container=c)
        if paths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return self.stub.Update(req, metadata=self.md).container

    def delete(self, cid):
        self.stub.Delete(pb.DeleteContainerRequest(id=cid), metadata=self.md)


@pytest.fixture
def containers(daemon, request):
    name = request.node.name
    ns = re.sub(r"[^A-Za-z0-9]+", "-", name)[:50].strip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    with daemon.client(ns) as c:
        yield Containers(c, ns)


def status_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)
    return e.value.code(), e.value.details()


# -- create, get, list ----------------------------------------------------------------


def test_create_then_get_and_list_return_what_was_stored(containers):
    before = time.time_ns()
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x08\x01")
    ext = any_pb2.Any(type_url="example.com/ext", value=b"data")
    created = containers.create(container("c1", labels={"k": "v", "empty": ""}, image="docker.io/library/a:1",
                                          snapshotter="overlayfs", snapshot_key="c1-snap",
                                          extensions={"e1": ext}, options=opts))
    assert created.id == "c1"
    assert dict(created.labels) == {"k": "v"}  # an empty value is not stored, as containerd does
    assert (created.image, created.snapshotter, created.snapshot_key) == ("docker.io/library/a:1", "overlayfs", "c1-snap")
    assert created.runtime.name == RUNC and created.runtime.options == opts
    assert created.spec == spec()
    assert dict(created.extensions) == {"e1": ext}
    assert created.created_at.ToNanoseconds() >= before - 1_000_000_000
    assert created.created_at == created.updated_at
    assert containers.get("c1") == created
    containers.create(container("c0"))
    assert containers.ids() == ["c0", "c1"]
    assert containers.stream_ids() == ["c0", "c1"]


def test_create_twice_is_already_exists_in_containerds_words(containers):
    containers.create(container("dup"))
    assert status_of(containers.create, container("dup")) == (
        grpc.StatusCode.ALREADY_EXISTS, 'container "dup": already exists')


def test_get_update_delete_of_a_missing_container_are_not_found_as_containerd_says(containers):
    ns = containers.ns
    assert status_of(containers.get, "nope") == (
        grpc.StatusCode.NOT_FOUND, f'container "nope" in namespace "{ns}": not found')
    # a namespace without containers, then one with
    assert status_of(containers.update, container("nope")) == (
        grpc.StatusCode.NOT_FOUND, f'cannot update container "nope" in namespace "{ns}": not found')
    assert status_of(containers.delete, "nope") == (
        grpc.StatusCode.NOT_FOUND, f'cannot delete container "nope" in namespace "{ns}": not found')
    containers.create(container("here"))
    assert status_of(containers.update, container("nope")) == (
        grpc.StatusCode.NOT_FOUND, 'container "nope": not found')
    assert status_of(containers.delete, "nope") == (grpc.StatusCode.NOT_FOUND, "container nope: not found")


PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@pytest.mark.parametrize("c, message", [
    (container(""), "create container failed validation: container.ID: identifier must not be empty"),
    (container("a/b"), f'create container failed validation: container.ID: identifier "a/b" must match {PATTERN}'),
    (container("-x"), f'create container failed validation: container.ID: identifier "-x" must match {PATTERN}'),
    (container("a" * 77), "create container failed validation: container.ID: identifier "
                          f'"{"a" * 77}" greater than maximum length (76 characters)'),
    (container("c", runtime=""), "create container failed validation: container.Runtime.Name must be set"),
    (container("c", no_spec=True), "create container failed validation: container.Spec must be set"),
    (container("c", snapshot_key="k"),
     "create container failed validation: container.Snapshotter must be set if container.SnapshotKey is set"),
    (container("c", extensions={"": any_pb2.Any()}),
     "create container failed validation: container.Extension keys must not be zero-length"),
    (container("c", labels={"k": "v" * 4096}), "create container failed validation: containers.Labels: "
                                               "label key and value greater than maximum size (4096 bytes), key: k"),
])
def test_create_validates_as_containerd_does(containers, c, message):
    assert status_of(containers.create, c) == (grpc.StatusCode.INVALID_ARGUMENT, message + ": invalid argument")
    assert containers.ids() == []


def test_hostile_input_gets_short_clear_errors_and_changes_nothing(containers):
    huge_id = "x" * (1 << 20)
    code, message = status_of(containers.create, container(huge_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(message) < 1024
    assert "greater than maximum length (76 characters)" in message
    code, message = status_of(containers.get, huge_id)
    assert code == grpc.StatusCode.NOT_FOUND and len(message) < 1024
    # too many labels, and too many bytes of them, are refused before any work
    many = {f"k{i}": "v" for i in range(5000)}
    assert status_of(containers.create, container("c", labels=many)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "too many labels: 5000 (at most 4096 per object): invalid argument")
    big = {f"k{i}": "v" * 4000 for i in range(300)}
    code, message = status_of(containers.create, container("c", labels=big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("labels too large")
    # control characters and unicode in ids are quoted, not echoed raw
    code, message = status_of(containers.create, container("bad\nid\x00"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and '"bad\\nid\\x00"' in message
    assert containers.ids() == []


def test_list_filters_as_containerds_container_store(containers):
    containers.create(container("web-1", image="docker.io/library/nginx:1", labels={"team": "a", "dot.key": "x"}))
    containers.create(container("web-2", image="docker.io/library/nginx:1", labels={"team": "b"}))
    containers.create(container("db", runtime="io.containerd.other.v1", image="docker.io/library/pg:1"))
    assert containers.ids("id==db") == ["db"]
    assert containers.ids("id~=^web") == ["web-1", "web-2"]
    assert containers.ids("runtime.name==io.containerd.other.v1") == ["db"]
    assert containers.ids("image==docker.io/library/nginx:1") == ["web-1", "web-2"]
    assert containers.ids("labels.team==a") == ["web-1"]
    assert containers.ids("labels.team") == ["web-1", "web-2"]
    assert containers.ids('labels."dot.key"==x') == ["web-1"]
    assert containers.ids("labels.team==b", "id==db") == ["db", "web-2"]
    assert containers.ids("labels.team==b,image==docker.io/library/pg:1") == []
    assert containers.ids("snapshotter==x") == []  # not a field containerd's adaptor knows
    assert containers.stream_ids("labels.team==a") == ["web-1"]
    code, message = status_of(containers.ids, "id==")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("filters: parse error")


# -- update ---------------------------------------------------------------------------


def test_update_by_paths_changes_only_what_the_mask_names(containers):
    ext_a, ext_b = any_pb2.Any(type_url="t/a", value=b"a"), any_pb2.Any(type_url="t/b", value=b"b")
    created = containers.create(container("u", labels={"a": "1", "b": "2"}, image="img:1", snapshotter="native",
                                          snapshot_key="k1", extensions={"a": ext_a, "b": ext_b}))
    new_spec = spec(b'{"ociVersion":"1.1.0"}')
    out = containers.update(container("u", labels={"a": "9", "c": "3"}, image="img:2", snapshotter="native",
                                      snapshot_key="k2", spec_any=new_spec, extensions={"a": ext_b}),
                            "labels.a", "labels.b", "labels.c", "extensions.a", "extensions.b")
    # a path whose key the request leaves out removes that key
    assert dict(out.labels) == {"a": "9", "c": "3"}
    assert dict(out.extensions) == {"a": ext_b}
    assert (out.image, out.snapshot_key, out.spec) == ("img:1", "k1", spec())  # not in the mask
    assert out.created_at == created.created_at
    assert out.updated_at.ToNanoseconds() > created.updated_at.ToNanoseconds()
    out = containers.update(container("u", image="img:2", snapshot_key="k2", spec_any=new_spec),
                            "image", "snapshotkey", "spec")
    assert (out.image, out.snapshot_key, out.spec) == ("img:2", "k2", new_spec)
    out = containers.update(container("u", labels={"z": "1"}, extensions={"b": ext_a}), "labels", "extensions")
    assert dict(out.labels) == {"z": "1"} and dict(out.extensions) == {"b": ext_a}
    assert containers.get("u") == out


def test_update_without_a_mask_replaces_the_mutable_fields_and_refuses_immutable_changes(containers):
    created = containers.create(container("u", labels={"a": "1"}, image="img:1", snapshotter="native",
                                          snapshot_key="k1"))
    assert status_of(containers.update, container("u", snapshotter="overlayfs", snapshot_key="k1")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "container.Snapshotter field is immutable: invalid argument")
    assert status_of(containers.update, container("u", runtime="io.containerd.other.v1", snapshotter="native")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "container.Runtime.Name field is immutable: invalid argument")
    out = containers.update(container("u", labels={"n": "1"}, snapshotter="native", snapshot_key="k9"))
    assert (dict(out.labels), out.image, out.snapshot_key) == ({"n": "1"}, "", "k9")
    assert out.created_at == created.created_at


@pytest.mark.parametrize("path", ["runtime", "snapshotter", "id", "created_at", "runtime.name", "nope"])
def test_update_of_another_field_is_refused_as_containerd_1_6_does(containers, path):
    containers.create(container("u", snapshotter="native"))
    assert status_of(containers.update, container("u", runtime="io.containerd.other.v1"), path) == (
        grpc.StatusCode.INVALID_ARGUMENT, f'cannot update "{path}" field on "u": invalid argument')
    assert containers.get("u").runtime.name == RUNC  # nothing changed


def test_update_validates_the_result_and_needs_an_id(containers):
    containers.create(container("u"))
    assert status_of(containers.update, container("u", labels={"k": "v" * 4096}), "labels") == (
        grpc.StatusCode.INVALID_ARGUMENT, "update failed validation: containers.Labels: label key and value "
                                          "greater than maximum size (4096 bytes), key: k: invalid argument")
    assert status_of(containers.update, container("u", no_spec=True), "spec") == (
        grpc.StatusCode.INVALID_ARGUMENT, "update failed validation: container.Spec must be set: invalid argument")
    assert status_of(containers.update, container("u", snapshot_key="k"), "snapshotkey") == (
        grpc.StatusCode.INVALID_ARGUMENT, "update failed validation: container.Snapshotter must be set if "
                                          "container.SnapshotKey is set: invalid argument")
    assert status_of(containers.update, container("")) == (grpc.StatusCode.INVALID_ARGUMENT, "Container.ID required")
    assert status_of(containers.update, container("u"), *[f"labels.k{i}" for i in range(5000)]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "too many update paths: 5000 (at most 4096): invalid argument")
    assert containers.get("u").spec == spec()


# -- namespaces, events, delete ------------------------------------------------------


def test_containers_are_per_namespace_and_hold_their_namespace(daemon, containers):
    containers.create(container("same"))
    with daemon.client("other-ns-containers") as c:
        other = Containers(c, "other-ns-containers")
        assert other.ids() == []
        other.create(container("same", image="other"))
        assert other.get("same").image == "other"
        other.delete("same")
    assert containers.get("same").image == ""
    ns_stub = namespace_pb2_grpc.NamespacesStub(containers.client.channel)
    code, message = status_of(ns_stub.Delete, namespace_pb2.DeleteNamespaceRequest(name=containers.ns))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "still has containers" in message
    containers.delete("same")
    ns_stub.Delete(namespace_pb2.DeleteNamespaceRequest(name=containers.ns))


def test_a_namespace_is_required_and_must_be_valid(containers):
    stub = containers.stub
    assert status_of(stub.Get, pb.GetContainerRequest(id="x")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "namespace is required: failed precondition")
    code, message = status_of(stub.List, pb.ListContainersRequest(), metadata=(("containerd-namespace", "a/b"),))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("namespace validation:")


def _subscribe(client, ns):
    """Subscribe to /containers/* and a probe topic in a thread; returns the
    queue of envelopes and the call (cancel it when done)."""
    stub = events_pb2_grpc.EventsStub(client.channel)
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=['topic~="^/containers/"', 'topic=="/probe"']))
    q: queue.Queue = queue.Queue()

    def pump():
        try:
            for env in call:
                q.put(env)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    probe = any_pb2.Any(type_url="containerd.events.ContainerDelete",
                        value=container_pb2.ContainerDelete(id="probe").SerializeToString())
    while True:  # no "subscribed" answer exists: publish until a probe arrives
        stub.Publish(events_pb2.PublishRequest(topic="/probe", event=probe), metadata=(("containerd-namespace", ns),))
        try:
            env = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if env.topic == "/probe":
            break
    return q, call


def test_create_update_delete_publish_containers_events(containers):
    q, call = _subscribe(containers.client, containers.ns)
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x08\x01")
    try:
        containers.create(container("ev", image="img:1", options=opts, snapshotter="native", snapshot_key="s"))
        containers.update(container("ev", labels={"a": "2"}), "labels")
        with pytest.raises(grpc.RpcError):
            containers.update(container("ev"), "nope")  # a refused change publishes nothing
        containers.delete("ev")
        got = []
        while len(got) < 3:
            env = q.get(timeout=10)
            if env.topic != "/probe":
                got.append(env)
    finally:
        call.cancel()
    assert [(e.namespace, e.topic, e.event.type_url) for e in got] == [
        (containers.ns, "/containers/create", "containerd.events.ContainerCreate"),
        (containers.ns, "/containers/update", "containerd.events.ContainerUpdate"),
        (containers.ns, "/containers/delete", "containerd.events.ContainerDelete"),
    ]
    create = container_pb2.ContainerCreate.FromString(got[0].event.value)
    assert (create.id, create.image, create.runtime.name, create.runtime.options) == ("ev", "img:1", RUNC, opts)
    assert container_pb2.ContainerUpdate.FromString(got[1].event.value) == container_pb2.ContainerUpdate(
        id="ev", image="img:1", labels={"a": "2"}, snapshot_key="s")
    assert container_pb2.ContainerDelete.FromString(got[2].event.value) == container_pb2.ContainerDelete(id="ev")


# -- garbage collection ----------------------------------------------------------------


def test_a_container_holds_its_snapshot_and_what_its_labels_name_until_it_is_deleted(containers):
    leases = Leases(containers.client)
    lease = leases.create("preparing").id
    snaps = Snapshots(containers.client, "native", lease)
    snaps.prepare("base-active")
    snaps.commit("base", "base-active")
    snaps.prepare("rootfs", "base")
    snaps.prepare("labelled")
    snaps.prepare("loose")
    containers.create(container("c", snapshotter="native", snapshot_key="rootfs",
                                labels={"containerd.io/gc.ref.snapshot.native": "labelled"}))
    leases.delete(lease, sync=True)  # a collection ran: only the container holds anything now
    names = sorted(i.name for i in snaps.list())
    assert names == ["base", "labelled", "rootfs"]  # the parent stays with its child
    with pytest.raises(errdefs.NotFound):
        snaps.stat("loose")
    containers.delete("c")
    Leases(containers.client).delete(Leases(containers.client).create("trigger").id, sync=True)
    assert list(snaps.list()) == []
