"""Content error paths, against real daemons: malformed digests on every
Content RPC (with containerd's own answers as the reference), List past
100 entries in containerd's batches, and a writer that runs out of space
on a small tmpfs content root."""

from __future__ import annotations

import hashlib
import os
import subprocess

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2 as lpb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as lpb_grpc

pytestmark = pytest.mark.e2e

MD = [("containerd-namespace", "default")]
CONTENT_ROOT = "io.containerd.content.v1.content"
BAD_DIGESTS = ["", "sha256:abc", "sha256:" + "g" * 64, "sha256:" + "A" * 64, "md5:" + "0" * 32, "nocolon",
               "sha256:" + "0" * 64 + "/../x", "x" * 300]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _calls(stub, bad: str) -> dict:
    """One request per Content RPC carrying `bad` where a digest (or, for
    Status and Abort, a ref) goes."""
    return {
        "Info": lambda: stub.Info(pb.InfoRequest(digest=bad), metadata=MD, timeout=10),
        "Update": lambda: stub.Update(pb.UpdateRequest(info=pb.Info(digest=bad, labels={"a": "b"})), metadata=MD,
                                      timeout=10),
        "Delete": lambda: stub.Delete(pb.DeleteContentRequest(digest=bad), metadata=MD, timeout=10),
        "Read": lambda: list(stub.Read(pb.ReadContentRequest(digest=bad), metadata=MD, timeout=10)),
        "Status": lambda: stub.Status(pb.StatusRequest(ref=bad), metadata=MD, timeout=10),
        "Abort": lambda: stub.Abort(pb.AbortRequest(ref=bad), metadata=MD, timeout=10),
        "Write expected at commit": lambda: list(stub.Write(iter([
            pb.WriteContentRequest(action=pb.STAT, ref="commit-bad"),
            pb.WriteContentRequest(action=pb.COMMIT, ref="commit-bad", data=b"abc", expected=bad),
        ]), metadata=MD, timeout=10)),
    }


# A digest is validated wherever one is asked for; a ref is any string, so
# Status and Abort of a digest-looking ref that no ingest has are NotFound,
# and a commit whose expected digest cannot match is FailedPrecondition
# (both as containerd answers).
EXPECTED = {"Info": "INVALID_ARGUMENT", "Update": "INVALID_ARGUMENT", "Delete": "INVALID_ARGUMENT",
            "Read": "INVALID_ARGUMENT", "Status": "NOT_FOUND", "Abort": "NOT_FOUND",
            "Write expected at commit": "FAILED_PRECONDITION"}


@pytest.mark.parametrize("bad", BAD_DIGESTS, ids=lambda b: b[:24] or "empty")
def test_malformed_digests_on_every_content_rpc(daemon, bad):
    d = daemon()
    with grpc.insecure_channel("unix:" + d.address) as ch:
        stub = pb_grpc.ContentStub(ch)
        got = {name: _code(fn).name for name, fn in _calls(stub, bad).items()}
        if bad != "":  # an empty expected digest means "none declared"
            # declared on the first Write message, a malformed expected digest
            # is refused at once (containerd only fails at commit)
            got["Write expected"] = _code(lambda: list(stub.Write(iter([
                pb.WriteContentRequest(action=pb.STAT, ref="first-bad", expected=bad)]), metadata=MD, timeout=10))).name
        if bad:
            assert got == {**EXPECTED, "Write expected": "INVALID_ARGUMENT"}
        else:
            assert got == {**EXPECTED, "Write expected at commit": "OK"}
        # nothing was left behind by the refused writes, and the daemon serves on
        assert [s.ref for s in stub.ListStatuses(pb.ListStatusesRequest(), metadata=MD, timeout=10).statuses] \
            in ([], ["commit-bad"])
        assert not os.path.exists(os.path.join(d.root, CONTENT_ROOT, "blobs", "sha256", "..", "x"))


@pytest.mark.containerd
def test_malformed_digest_codes_match_containerd(daemon, containerd):
    """The same requests to a real containerd: the same codes."""
    d = daemon()
    for bad in BAD_DIGESTS:
        codes = []
        for address in (d.address, containerd.address):
            with grpc.insecure_channel("unix:" + address) as ch:
                codes.append({name: _code(fn) for name, fn in _calls(pb_grpc.ContentStub(ch), bad).items()})
        assert codes[0] == codes[1], bad[:40]


def _ingest_many(address: str, count: int) -> list[str]:
    """Commit `count` small blobs under one lease (so no collection takes them)."""
    datas = [f"blob {i}\n".encode() for i in range(count)]
    with grpc.insecure_channel("unix:" + address) as ch:
        lpb_grpc.LeasesStub(ch).Create(lpb.CreateRequest(id="keep"), metadata=MD, timeout=10)
        stub = pb_grpc.ContentStub(ch)
        for i, data in enumerate(datas):
            list(stub.Write(iter([pb.WriteContentRequest(action=pb.COMMIT, ref=f"r{i}", data=data,
                                                         expected=_digest(data))]),
                            metadata=MD + [("containerd-lease", "keep")], timeout=10))
    return sorted(_digest(x) for x in datas)


def _list_batches(address: str) -> tuple[list[int], list[str]]:
    with grpc.insecure_channel("unix:" + address) as ch:
        msgs = list(pb_grpc.ContentStub(ch).List(pb.ListContentRequest(), metadata=MD, timeout=30))
    return [len(m.info) for m in msgs], sorted(i.digest for m in msgs for i in m.info)


@pytest.mark.containerd
def test_list_past_100_entries_arrives_whole_in_containerds_batches(daemon, containerd):
    count = 250
    d = daemon()
    want = _ingest_many(d.address, count)
    sizes, digests = _list_batches(d.address)
    assert digests == want
    assert sizes == [100, 100, 50]
    _ingest_many(containerd.address, count)
    c_sizes, c_digests = _list_batches(containerd.address)
    assert (c_sizes, c_digests) == (sizes, digests)


@pytest.fixture
def small_content_root(daemon):
    """A daemon whose content store lives on a 2 MiB tmpfs."""
    d_dir = daemon.tempdir()
    root = os.path.join(d_dir, "root")
    mnt = os.path.join(root, CONTENT_ROOT)
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0711", "tmpfs", mnt], check=True)
    try:
        d = daemon(config={"root": root, "plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "1h"}}})
        yield d
        d.stop()
    finally:
        subprocess.run(["umount", mnt], check=True)


def _write(stub, ref: str, data: bytes, chunk: int = 256 << 10) -> grpc.RpcError | None:
    reqs = [pb.WriteContentRequest(action=pb.STAT, ref=ref, total=len(data), expected=_digest(data))]
    for off in range(0, len(data), chunk):
        reqs.append(pb.WriteContentRequest(action=pb.WRITE, ref=ref, offset=off, data=data[off:off + chunk]))
    reqs.append(pb.WriteContentRequest(action=pb.COMMIT, ref=ref, offset=len(data), total=len(data),
                                       expected=_digest(data)))
    try:
        list(stub.Write(iter(reqs), metadata=MD, timeout=20))
    except grpc.RpcError as exc:
        return exc
    return None


def test_writer_after_enospc_fails_clearly_and_the_store_recovers(small_content_root):
    d = small_content_root
    small, big, later = os.urandom(100_000), os.urandom(3 << 20), os.urandom(1 << 20)
    with grpc.insecure_channel("unix:" + d.address) as ch:
        stub = pb_grpc.ContentStub(ch)
        assert _write(stub, "small", small) is None
        err = _write(stub, "big", big)
        assert err is not None and err.code() == grpc.StatusCode.UNKNOWN
        assert err.details() == "failed to write ingest data: no space left on device"
        # nothing of it was committed; the partial ingest is there to abort or resume
        assert _code(lambda: stub.Info(pb.InfoRequest(digest=_digest(big)), metadata=MD, timeout=10)) \
            == grpc.StatusCode.NOT_FOUND
        st = stub.Status(pb.StatusRequest(ref="big"), metadata=MD, timeout=10).status
        assert 0 < st.offset < len(big)
        # a writer started on the full disk fails the same way and leaves no directory
        err = _write(stub, "tiny", b"tiny")
        assert err is not None and err.code() == grpc.StatusCode.UNKNOWN
        assert err.details() in ("failed to start the ingest: no space left on device",
                                 "failed to write ingest data: no space left on device")
        statuses = stub.ListStatuses(pb.ListStatusesRequest(), metadata=MD, timeout=10).statuses
        assert [s.ref for s in statuses] == ["big"]
        assert len(os.listdir(os.path.join(d.root, CONTENT_ROOT, "ingest"))) == 1
        # the store keeps serving what it has
        got = b"".join(r.data for r in stub.Read(pb.ReadContentRequest(digest=_digest(small)), metadata=MD,
                                                 timeout=10))
        assert got == small
        listed = [i.digest for r in stub.List(pb.ListContentRequest(), metadata=MD, timeout=10) for i in r.info]
        assert listed == [_digest(small)]
        # space freed: a new write goes through
        stub.Abort(pb.AbortRequest(ref="big"), metadata=MD, timeout=10)
        assert _write(stub, "later", later) is None
        got = b"".join(r.data for r in stub.Read(pb.ReadContentRequest(digest=_digest(later)), metadata=MD,
                                                 timeout=10))
        assert got == later
    assert "Traceback" not in d.log()
