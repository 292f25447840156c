"""The leases service in a daemon running in-process, over its gRPC socket:
create (given or generated ids, labels, expiry), list with filters, delete,
resources, namespaces, and containerd's error wording."""

from __future__ import annotations

import hashlib
import re
import time

import grpc
import pytest

from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.client.commands.leases import rfc3339_local
from pycontainerd.client.leases import Leases
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.leases import Resource, random_id
from pycontainerd.plugins.metadata.leases import parse_resource
from pycontainerd.testing import InProcessDaemon

DIGEST = "sha256:" + hashlib.sha256(b"x").hexdigest()


@pytest.fixture(scope="module")
def daemon():
    with InProcessDaemon() as d:
        yield d


@pytest.fixture
def leases(daemon, request):
    # a namespace per test: the daemon is shared by the module
    ns = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    with daemon.client(ns) as c:
        yield Leases(c)


def grpc_error(leases: Leases, method: str, request) -> grpc.RpcError:
    """The raw status of a call, in the fixture's namespace."""
    with pytest.raises(grpc.RpcError) as e:
        getattr(leases.stub, method)(request, metadata=leases.client._metadata)
    return e.value


def test_create_with_id_and_labels_then_list(leases):
    before = time.time()
    lease = leases.create("l1", {"a": "b", "empty": ""})
    assert lease.id == "l1"
    assert lease.labels == {"a": "b"}  # an empty value is not stored, as containerd does
    assert before - 1 <= lease.created_at / 1e9 <= time.time() + 1
    listed = leases.list()
    assert [(x.id, x.labels, x.created_at) for x in listed] == [("l1", {"a": "b"}, lease.created_at)]


def test_empty_id_gets_containerds_random_form(leases):
    lease = leases.create()
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", lease.id)
    assert [x.id for x in leases.list()] == [lease.id]
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", random_id())


def test_duplicate_and_missing_ids_are_worded_as_containerd(leases):
    leases.create("dup")
    err = grpc_error(leases, "Create", pb.CreateRequest(id="dup"))
    assert (err.code(), err.details()) == (grpc.StatusCode.ALREADY_EXISTS, 'lease "dup": already exists')
    with pytest.raises(errdefs.NotFound) as e:
        leases.delete("missing")
    assert str(e.value) == 'lease "missing": not found'
    for call in (lambda: leases.list_resources("missing"),
                 lambda: leases.add_resource("missing", "content", DIGEST),
                 lambda: leases.delete_resource("missing", "content", DIGEST)):
        with pytest.raises(errdefs.NotFound):
            call()


def test_list_is_sorted_and_filtered_by_id_and_labels(leases):
    leases.create("b", {"team": "x", "dotted.key": "v"})
    leases.create("a", {"team": "y"})
    leases.create("c")
    assert [x.id for x in leases.list()] == ["a", "b", "c"]
    assert [x.id for x in leases.list("id==b")] == ["b"]
    assert [x.id for x in leases.list("labels.team==x", "id==c")] == ["b", "c"]  # filters are ORed
    assert [x.id for x in leases.list("labels.team")] == ["a", "b"]
    assert [x.id for x in leases.list('labels."dotted.key"==v')] == ["b"]
    assert [x.id for x in leases.list("labels.team~=^[xy]$,id!=a")] == ["b"]


def test_invalid_filter_is_invalid_argument(leases):
    err = grpc_error(leases, "List", pb.ListRequest(filters=["labels.a=="]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # containerd wraps the parse error's "invalid argument" once more
    assert err.details() == ("filters: parse error: [labels.a==]: expected value or quoted: "
                             "invalid argument: invalid argument")


def test_delete_removes_the_lease_its_labels_and_resources(leases):
    leases.create("gone", {"k": "v"})
    leases.add_resource("gone", "content", DIGEST)
    leases.delete("gone")
    assert leases.list() == []
    leases.create("gone")  # the id is free again, with nothing left over
    assert leases.list()[0].labels == {} and leases.list_resources("gone") == []


def test_resources_add_list_delete(leases):
    leases.create("r")
    leases.add_resource("r", "snapshots/overlayfs", "k2")
    leases.add_resource("r", "snapshots/native", "k1")
    leases.add_resource("r", "ingests", "ref1")
    leases.add_resource("r", "content", DIGEST)
    leases.add_resource("r", "content", DIGEST)  # twice is once
    # containerd's order: content, ingests, then snapshots by snapshotter and key
    assert leases.list_resources("r") == [
        ("content", DIGEST), ("ingests", "ref1"), ("snapshots/native", "k1"), ("snapshots/overlayfs", "k2"),
    ]
    leases.delete_resource("r", "snapshots/native", "k1")
    leases.delete_resource("r", "snapshots/native", "never-added")  # not an error
    assert ("snapshots/native", "k1") not in leases.list_resources("r")


def test_bad_resources_are_refused_with_containerds_codes(leases):
    leases.create("bad")
    cases = [
        (pb.Resource(id="x", type="content"), grpc.StatusCode.INVALID_ARGUMENT,
         "invalid content resource id x: invalid checksum digest format: invalid argument"),
        (pb.Resource(id="sha256:abc", type="content"), grpc.StatusCode.INVALID_ARGUMENT,
         "invalid content resource id sha256:abc: invalid checksum digest length: invalid argument"),
        (pb.Resource(id="k", type="snapshots"), grpc.StatusCode.INVALID_ARGUMENT,
         "invalid snapshot resource type snapshots: invalid argument"),
        (pb.Resource(id="k", type="content/x"), grpc.StatusCode.INVALID_ARGUMENT,
         "invalid resource type content/x: invalid argument"),
        (pb.Resource(id="k", type="images"), grpc.StatusCode.UNIMPLEMENTED,
         "resource type images not supported yet: not implemented"),
    ]
    for resource, code, details in cases:
        err = grpc_error(leases, "AddResource", pb.AddResourceRequest(id="bad", resource=resource))
        assert (err.code(), err.details()) == (code, details)
    assert leases.list_resources("bad") == []


def test_leases_are_namespaced(daemon):
    with daemon.client("leases-ns-a") as a, daemon.client("leases-ns-b") as b:
        Leases(a).create("same")
        Leases(b).create("same", {"in": "b"})
        assert [x.labels for x in Leases(a).list()] == [{}]
        Leases(a).delete("same")
        assert [x.id for x in Leases(b).list()] == ["same"]


def test_a_namespace_is_required(daemon):
    with daemon.client("") as c:
        with pytest.raises(errdefs.FailedPrecondition):
            Leases(c).list()


def test_expired_lease_is_collected_unexpired_stays(daemon):
    with daemon.client("leases-expiry") as c:
        leases = Leases(c)
        past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
        leases.create("old", {"containerd.io/gc.expire": past})
        leases.create("new", {"containerd.io/gc.expire": rfc3339_local(time.time() + 3600)})
        # "old" stays listed until a collection runs; another test's GC on this
        # shared daemon may already have run one, so only "new" is certain here.
        assert "new" in {x.id for x in leases.list()}
        leases.create("t")
        leases.delete("t", sync=True)
        assert [x.id for x in leases.list()] == ["new"]


def test_parse_resource_keeps_what_containerd_stores():
    r = Resource(id=DIGEST, type="content")
    assert parse_resource(r) == r
    with pytest.raises(errdefs.InvalidArgument):
        parse_resource(Resource(id="sha256:" + "A" * 64, type="content"))
    with pytest.raises(errdefs.NotImplementedErr):
        parse_resource(Resource(id="x", type=""))
