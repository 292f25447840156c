"""The images service in a daemon running in-process, over its gRPC socket:
create, get, list with containerd's filters, update with field masks,
delete (and a sync delete that collects what the image held), the
/images/* events, namespaces, containerd's validation and error wording;
and the schema migration that widened the images table."""

from __future__ import annotations

import hashlib
import io
import queue
import re
import sqlite3
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, field_mask_pb2

from pycontainerd.api.events import image_pb2
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as pb_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.client.content import ContentClient
from pycontainerd.client.leases import Leases
from pycontainerd.pkg import errdefs
from pycontainerd.testing import InProcessDaemon

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


D1, D2 = digest(b"one"), digest(b"two")


@pytest.fixture(scope="module")
def daemon():
    with InProcessDaemon() as d:
        yield d


class Images:
    """The raw Images stub in one namespace; calls return the response or
    raise grpc.RpcError."""

    def __init__(self, client, ns: str):
        self.client = client
        self.ns = ns
        self.stub = pb_grpc.ImagesStub(client.channel)
        self.md = (("containerd-namespace", ns),)

    def create(self, name, dgst=D1, size=10, media_type=MANIFEST, labels=None, annotations=None):
        target = descriptor_pb2.Descriptor(media_type=media_type, digest=dgst, size=size, annotations=annotations or {})
        req = pb.CreateImageRequest(image=pb.Image(name=name, target=target, labels=labels or {}))
        return self.stub.Create(req, metadata=self.md).image

    def get(self, name):
        return self.stub.Get(pb.GetImageRequest(name=name), metadata=self.md).image

    def names(self, *filters):
        return [i.name for i in self.stub.List(pb.ListImagesRequest(filters=filters), metadata=self.md).images]

    def update(self, image, *paths):
        req = pb.UpdateImageRequest(image=image)
        if paths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return self.stub.Update(req, metadata=self.md).image

    def delete(self, name, sync=False):
        self.stub.Delete(pb.DeleteImageRequest(name=name, sync=sync), metadata=self.md)


@pytest.fixture
def images(daemon, request):
    ns = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    with daemon.client(ns) as c:
        yield Images(c, ns)


def status_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)
    return e.value.code(), e.value.details()


# -- create, get, list ----------------------------------------------------------------


def test_create_then_get_and_list_return_what_was_stored(images):
    before = time.time_ns()
    created = images.create("docker.io/library/a:1", labels={"k": "v", "empty": ""},
                            annotations={"org.opencontainers.image.ref.name": "1", "gone": ""})
    assert created.name == "docker.io/library/a:1"
    assert dict(created.labels) == {"k": "v"}  # an empty value is not stored, as containerd does
    assert (created.target.media_type, created.target.digest, created.target.size) == (MANIFEST, D1, 10)
    assert dict(created.target.annotations) == {"org.opencontainers.image.ref.name": "1"}
    assert created.created_at.ToNanoseconds() >= before - 1_000_000_000
    assert created.created_at == created.updated_at
    assert images.get("docker.io/library/a:1") == created
    images.create("docker.io/library/b:1", dgst=D2)
    assert images.names() == ["docker.io/library/a:1", "docker.io/library/b:1"]


def test_create_twice_is_already_exists_in_containerds_words(images):
    images.create("x")
    assert status_of(images.create, "x") == (grpc.StatusCode.ALREADY_EXISTS, 'image "x": already exists')


def test_get_update_delete_of_a_missing_image_is_not_found(images):
    assert status_of(images.get, "nope") == (grpc.StatusCode.NOT_FOUND, 'image "nope": not found')
    assert status_of(images.delete, "nope") == (grpc.StatusCode.NOT_FOUND, 'image "nope": not found')
    image = pb.Image(name="nope", target=descriptor_pb2.Descriptor(media_type=MANIFEST, digest=D1, size=1))
    assert status_of(images.update, image) == (grpc.StatusCode.NOT_FOUND, 'image "nope": not found')


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "Image.Name required"),
    ({"dgst": "sha256:zz"}, 'Target.Digest "sha256:zz" invalid: invalid checksum digest length: invalid argument'),
    ({"dgst": ""}, 'Target.Digest "" invalid: invalid checksum digest format: invalid argument'),
    ({"size": 0}, "Target.Size must be greater than zero: invalid argument"),
    ({"size": -5}, "Target.Size must be greater than zero: invalid argument"),
    ({"media_type": ""}, "Target.MediaType must be set: invalid argument"),
    ({"labels": {"k": "v" * 4096}},
     "image.Labels: label key and value greater than maximum size (4096 bytes), key: k: invalid argument"),
])
def test_create_validates_as_containerd_does(images, kwargs, message):
    kwargs = {"name": "img", **kwargs}
    assert status_of(images.create, **kwargs) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert images.names() == []


def test_list_filters_as_containerds_image_store(images):
    images.create("docker.io/library/busybox:1", dgst=D1, labels={"team": "a", "dotted.key": "x"})
    images.create("docker.io/library/busybox:2", dgst=D2, media_type=INDEX, labels={"team": "b"})
    images.create("quay.io/other:1", dgst=D2, annotations={"note": "hi"})
    assert images.names("name==quay.io/other:1") == ["quay.io/other:1"]
    assert images.names("name~=busybox") == ["docker.io/library/busybox:1", "docker.io/library/busybox:2"]
    assert images.names(f"target.digest=={D2}") == ["docker.io/library/busybox:2", "quay.io/other:1"]
    assert images.names(f"target.mediatype=={INDEX}") == ["docker.io/library/busybox:2"]
    assert images.names("labels.team==a") == ["docker.io/library/busybox:1"]
    assert images.names("labels.team") == ["docker.io/library/busybox:1", "docker.io/library/busybox:2"]
    assert images.names('labels."dotted.key"==x') == ["docker.io/library/busybox:1"]
    assert images.names("annotations.note==hi") == ["quay.io/other:1"]
    # several filters: any may match; within one, every selector must
    assert images.names("labels.team==b", "name==quay.io/other:1") == ["docker.io/library/busybox:2", "quay.io/other:1"]
    assert images.names(f"labels.team==b,target.digest=={D1}") == []
    code, message = status_of(images.names, "name==")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("filters: parse error")


# -- update ---------------------------------------------------------------------------


def _image(name, dgst=D1, size=10, media_type=MANIFEST, labels=None, annotations=None):
    return pb.Image(name=name, labels=labels or {}, target=descriptor_pb2.Descriptor(
        media_type=media_type, digest=dgst, size=size, annotations=annotations or {}))


def test_update_single_labels_and_annotations_by_path(images):
    created = images.create("u", labels={"a": "1", "b": "2"}, annotations={"x": "1", "y": "2"})
    out = images.update(_image("u", dgst=D2, labels={"a": "9", "c": "3"}, annotations={"x": "9"}),
                        "labels.a", "labels.b", "labels.c", "annotations.x", "annotations.y")
    # a path whose key the request leaves out removes that key
    assert dict(out.labels) == {"a": "9", "c": "3"}
    assert dict(out.target.annotations) == {"x": "9"}
    assert out.target.digest == D1  # the target was not in the mask
    assert out.created_at == created.created_at and out.updated_at.ToNanoseconds() > created.updated_at.ToNanoseconds()
    assert images.get("u") == out


def test_update_whole_labels_annotations_and_target(images):
    images.create("u", labels={"a": "1"}, annotations={"x": "1"})
    out = images.update(_image("u", labels={"b": "2"}), "labels")
    assert dict(out.labels) == {"b": "2"} and dict(out.target.annotations) == {"x": "1"}
    out = images.update(_image("u", annotations={"y": "2"}), "annotations")
    assert dict(out.target.annotations) == {"y": "2"}
    out = images.update(_image("u", dgst=D2, size=99, media_type=INDEX, annotations={"z": "3"}), "target")
    assert (out.target.digest, out.target.size, out.target.media_type) == (D2, 99, INDEX)
    assert dict(out.target.annotations) == {"z": "3"}  # the target is replaced as a unit
    assert dict(out.labels) == {"b": "2"}


def test_update_without_a_mask_replaces_everything_but_the_creation_time(images):
    created = images.create("u", labels={"a": "1"}, annotations={"x": "1"})
    out = images.update(_image("u", dgst=D2, labels={"n": "1"}))
    assert (out.target.digest, dict(out.labels), dict(out.target.annotations)) == (D2, {"n": "1"}, {})
    assert out.created_at == created.created_at


def test_update_refuses_other_paths_and_invalid_results(images):
    images.create("u")
    assert status_of(images.update, _image("u"), "name") == (
        grpc.StatusCode.INVALID_ARGUMENT, 'cannot update "name" field on image "u": invalid argument')
    assert status_of(images.update, _image("u"), "target.digest") == (
        grpc.StatusCode.INVALID_ARGUMENT, 'cannot update "target.digest" field on image "u": invalid argument')
    assert status_of(images.update, _image("u", size=0), "target") == (
        grpc.StatusCode.INVALID_ARGUMENT, "Target.Size must be greater than zero: invalid argument")
    assert status_of(images.update, _image("")) == (grpc.StatusCode.INVALID_ARGUMENT, "Image.Name required")
    assert images.get("u").target.size == 10  # nothing changed


# -- namespaces, events, delete ------------------------------------------------------


def test_images_are_per_namespace_and_hold_their_namespace(daemon, images):
    images.create("shared-name")
    with daemon.client("other-ns-images") as c:
        other = Images(c, "other-ns-images")
        assert other.names() == []
        other.create("shared-name", dgst=D2)
        assert other.get("shared-name").target.digest == D2
        other.delete("shared-name")
    assert images.get("shared-name").target.digest == D1
    ns_stub = namespace_pb2_grpc.NamespacesStub(images.client.channel)
    code, message = status_of(ns_stub.Delete, namespace_pb2.DeleteNamespaceRequest(name=images.ns))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "still has images" in message


def _subscribe(client, ns):
    """Subscribe to /images/* and a probe topic in a thread; returns the
    queue of envelopes and the call (cancel it when done)."""
    stub = events_pb2_grpc.EventsStub(client.channel)
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=['topic~="^/images/"', 'topic=="/probe"']))
    q: queue.Queue = queue.Queue()

    def pump():
        try:
            for env in call:
                q.put(env)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    probe = any_pb2.Any(type_url="containerd.services.images.v1.ImageDelete",
                        value=image_pb2.ImageDelete(name="probe").SerializeToString())
    while True:  # no "subscribed" answer exists: publish until a probe arrives
        stub.Publish(events_pb2.PublishRequest(topic="/probe", event=probe), metadata=(("containerd-namespace", ns),))
        try:
            env = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if env.topic == "/probe":
            break
    return q, call


def test_create_update_delete_publish_images_events(images):
    q, call = _subscribe(images.client, images.ns)
    try:
        images.create("ev", labels={"a": "1"})
        images.update(_image("ev", labels={"a": "2"}), "labels")
        images.delete("ev")
        got = []
        while len(got) < 3:
            env = q.get(timeout=10)
            if env.topic != "/probe":
                got.append(env)
    finally:
        call.cancel()
    assert [(e.namespace, e.topic, e.event.type_url) for e in got] == [
        (images.ns, "/images/create", "containerd.services.images.v1.ImageCreate"),
        (images.ns, "/images/update", "containerd.services.images.v1.ImageUpdate"),
        (images.ns, "/images/delete", "containerd.services.images.v1.ImageDelete"),
    ]
    assert image_pb2.ImageCreate.FromString(got[0].event.value) == image_pb2.ImageCreate(name="ev", labels={"a": "1"})
    assert image_pb2.ImageUpdate.FromString(got[1].event.value) == image_pb2.ImageUpdate(name="ev", labels={"a": "2"})
    assert image_pb2.ImageDelete.FromString(got[2].event.value) == image_pb2.ImageDelete(name="ev")


def test_an_image_keeps_its_target_and_what_the_content_labels_name_until_a_sync_delete(images):
    # written under a lease, as a client does: without one the daemon's
    # first collection (100 ms after start) may take them before any image
    # holds them
    leases = Leases(images.client)
    lease = leases.create("writing-images").id
    content = ContentClient(images.client, lease)
    child = b"a layer"
    parent = b"a manifest"
    other = b"unreferenced"
    content.write_blob("child", io.BytesIO(child), len(child), digest(child))
    content.write_blob("parent", io.BytesIO(parent), len(parent), digest(parent),
                       labels={"containerd.io/gc.ref.content.l.0": digest(child)})
    content.write_blob("other", io.BytesIO(other), len(other), digest(other))
    images.create("keep", dgst=digest(parent), size=len(parent))
    images.create("keep-too", dgst=digest(parent), size=len(parent))
    leases.delete(lease)  # from now on only the images hold anything
    images.delete("keep-too", sync=True)  # a collection ran: the other image still holds both
    assert content.info(digest(parent)).size == len(parent)
    assert content.info(digest(child)).size == len(child)
    with pytest.raises(errdefs.NotFound):
        content.info(digest(other))  # nothing held it
    images.delete("keep", sync=True)
    for data in (parent, child):
        with pytest.raises(errdefs.NotFound):
            content.info(digest(data))


# -- the schema -----------------------------------------------------------------------


def test_images_written_by_schema_4_read_back_after_the_migration(tmp_path):
    import asyncio

    from pycontainerd.plugins.metadata.images import ImageStore
    from pycontainerd.plugins.metadata.sqlite import DB, MIGRATIONS, _statements

    path = str(tmp_path / "meta.db")
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:4]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO images (namespace, name, target_digest) VALUES ('ns', 'old', ?)", (D1,))
    conn.close()

    async def run():
        db = DB(path)
        await db.open()
        try:
            return db.schema_version, await ImageStore(db).get("ns", "old")
        finally:
            db.close()

    version, image = asyncio.run(run())
    assert version == len(MIGRATIONS)
    assert (image.name, image.target.digest, image.target.size, image.labels) == ("old", D1, 0, {})
