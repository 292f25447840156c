"""`pycontainerd content serve` as a content store of its own: labels given
at commit and changed by Update are kept (and survive a restart of the
server), Status follows a writer, as containerd's content test suite
(Writer, UpdateStatus, Labels) expects of a store. All through a real
server process and its socket."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2

from e2e_support import ContentServer, short_dir
from pycontainerd.api.services.content.v1 import content_pb2 as pb

pytestmark = pytest.mark.e2e


@pytest.fixture
def server():
    d = short_dir("pcd-cs-")
    s = ContentServer(d).start()
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _labels(stub, dgst: str) -> dict[str, str]:
    return dict(stub.Info(pb.InfoRequest(digest=dgst), timeout=10).info.labels)


def test_commit_labels_are_kept_updated_by_field_path_and_survive_a_restart(server):
    data = os.urandom(256)
    dgst = _digest(data)
    labels = {"k1": "v1", "k2": "v2", "containerd.io/gc.root": "2026-01-01T00:00:00Z"}
    with grpc.insecure_channel("unix:" + server.sock) as ch:
        stub = server.stub(ch)
        answers = list(stub.Write(iter([
            pb.WriteContentRequest(action=pb.STAT, ref="c1-labels", total=256, expected=dgst),
            pb.WriteContentRequest(action=pb.COMMIT, ref="c1-labels", offset=0, data=data, total=256,
                                   expected=dgst, labels=labels),
        ]), timeout=10))
        assert answers[-1].digest == dgst and answers[-1].offset == 256
        info = stub.Info(pb.InfoRequest(digest=dgst), timeout=10).info
        assert (info.size, dict(info.labels)) == (256, labels)

        # no paths: the labels given replace them all
        new = {"k1": "newvalue", "k3": "v3", "containerd.io/gc.root": labels["containerd.io/gc.root"]}
        got = stub.Update(pb.UpdateRequest(info=pb.Info(digest=dgst, labels=new)), timeout=10).info
        assert dict(got.labels) == new and got.updated_at.ToNanoseconds() >= info.updated_at.ToNanoseconds()
        assert _labels(stub, dgst) == new
        # field paths: labels.k1 set, labels.k3 (absent from the request) removed, the rest untouched
        got = stub.Update(pb.UpdateRequest(info=pb.Info(digest=dgst, labels={"k1": "v1"}),
                                           update_mask=field_mask_pb2.FieldMask(paths=["labels.k3", "labels.k1"])),
                          timeout=10).info
        want = {"k1": "v1", "containerd.io/gc.root": labels["containerd.io/gc.root"]}
        assert dict(got.labels) == want and _labels(stub, dgst) == want
        # a field other than labels is refused, as containerd's local store does
        with pytest.raises(grpc.RpcError) as exc:
            stub.Update(pb.UpdateRequest(info=pb.Info(digest=dgst, size=1),
                                         update_mask=field_mask_pb2.FieldMask(paths=["size"])), timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == f'cannot update "size" field on content info "{dgst}": invalid argument'
        # List carries the labels, and filters on them
        listed = [i for r in stub.List(pb.ListContentRequest(filters=["labels.k1==v1"]), timeout=10) for i in r.info]
        assert [(i.digest, dict(i.labels)) for i in listed] == [(dgst, want)]
        assert [i for r in stub.List(pb.ListContentRequest(filters=["labels.k1==other"]), timeout=10)
                for i in r.info] == []

    server.stop()
    server.start()
    with grpc.insecure_channel("unix:" + server.sock) as ch:
        stub = server.stub(ch)
        assert _labels(stub, dgst) == want  # on disk, not only in the old process
        stub.Delete(pb.DeleteContentRequest(digest=dgst), timeout=10)
        # committed again without labels: nothing of the deleted blob's labels comes back
        list(stub.Write(iter([pb.WriteContentRequest(action=pb.COMMIT, ref="again", data=data, expected=dgst)]),
                        timeout=10))
        assert _labels(stub, dgst) == {}
    assert not os.listdir(os.path.join(server.root, "labels", "sha256"))


def test_status_follows_a_writer_and_commit_labels_show_in_info(server):
    """containerd's UpdateStatus case: the status of an open ingest moves with
    each write, and the labels of the commit are on the blob."""
    data = os.urandom(256)
    dgst = _digest(data)
    with grpc.insecure_channel("unix:" + server.sock) as ch:
        stub = server.stub(ch)
        before = time.time_ns()
        offsets = _write_steps(stub, "c1", data, dgst, [64, 192])
        assert offsets == [64, 192]
        st = stub.Status(pb.StatusRequest(ref="c1"), timeout=10).status
        assert (st.ref, st.offset, st.total) == ("c1", 192, 256)
        assert st.started_at.ToNanoseconds() >= before - 10**9
        assert st.updated_at.ToNanoseconds() >= st.started_at.ToNanoseconds()
        statuses = stub.ListStatuses(pb.ListStatusesRequest(filters=["ref==c1"]), timeout=10).statuses
        assert [(s.ref, s.offset) for s in statuses] == [("c1", 192)]

        answers = list(stub.Write(iter([
            pb.WriteContentRequest(action=pb.COMMIT, ref="c1", offset=192, data=data[192:], total=256,
                                   expected=dgst, labels={"k1": "v1"}),
        ]), timeout=10))
        assert answers[-1].offset == 256 and answers[-1].digest == dgst
        assert _labels(stub, dgst) == {"k1": "v1"}
        with pytest.raises(grpc.RpcError) as exc:
            stub.Status(pb.StatusRequest(ref="c1"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def _write_steps(stub, ref: str, data: bytes, dgst: str, cuts: list[int]) -> list[int]:
    """Write data[:cut] for each cut, one Write stream per step (each resumes
    the ingest at its offset); returns the offsets the server reported."""
    offsets, at = [], 0
    for cut in cuts:
        answers = list(stub.Write(iter([
            pb.WriteContentRequest(action=pb.STAT, ref=ref, total=len(data), expected=dgst),
            pb.WriteContentRequest(action=pb.WRITE, ref=ref, offset=at, data=data[at:cut]),
        ]), timeout=10))
        assert answers[0].offset == at  # the stream resumed where the last one stopped
        offsets.append(answers[-1].offset)
        at = cut
    return offsets
