"""The Content service driven by the real ctr: ingest, ls, get, label,
active, rm; pyctr's output against ctr's; namespace isolation over one
shared file; and a daemon SIGKILLed in the middle of an ingest.

The GC scheduler is disabled in these daemons: an ingested blob that
nothing references is garbage to containerd's collector (and ours), and
these tests are about the content store, not about when a collection runs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import pytest

from e2e_support import CTR, PYCONTAINERD, DaemonProcess
from pyctr_scenarios import mask_age

pytestmark = pytest.mark.e2e

NO_GC = {"disabled_plugins": ["io.containerd.gc.v1.scheduler"]}


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_dir(d: DaemonProcess) -> str:
    return os.path.join(d.root, "io.containerd.content.v1.content", "blobs", "sha256")


def blobs_on_disk(d: DaemonProcess) -> list[str]:
    p = blob_dir(d)
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def active_rows(d: DaemonProcess, *args: str) -> list[list[str]]:
    out = d.ctr(*args, "content", "active").stdout.decode().splitlines()
    assert out[0].split() == ["REF", "SIZE", "AGE"], out
    return [line.split("\t") for line in out[1:]]


def wait_active(d: DaemonProcess, ref: str, size: str, *args: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = [r for r in active_rows(d, *args) if r[0] == ref]
        if rows and rows[0][1] == size:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"{ref} never reached {size}: {rows}")


def start_ctr_ingest(d: DaemonProcess, ref: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([CTR, "--address", d.address, *args, "content", "ingest", ref],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ingest_ls_get_label_rm_with_the_real_ctr(daemon, tmp_path):
    d = daemon(config=NO_GC)
    data = os.urandom(300_000)
    f = tmp_path / "blob"
    f.write_bytes(data)
    other = b"no expected digest given\n"
    with open(f, "rb") as stdin:
        d.ctr("content", "ingest", "--expected-digest", dg(data), "--expected-size", str(len(data)), "ref-1",
              stdin=stdin)
    d.ctr("content", "ingest", "ref-2", input=other)
    # the same bytes again: already there, ctr is content
    d.ctr("content", "ingest", "--expected-digest", dg(other), "ref-3", input=other)
    assert d.ctr("content", "ls", "-q").stdout.decode().split() == sorted([dg(data), dg(other)])
    assert d.ctr("content", "get", dg(data)).stdout == data
    assert d.ctr("content", "get", dg(other)).stdout == other
    assert d.ctr("content", "label", dg(data), "team=blue").stdout == b"team=blue\n"
    table = d.ctr("content", "ls").stdout.decode().splitlines()
    assert table[0].split() == ["DIGEST", "SIZE", "AGE", "LABELS"]
    row = next(line.split("\t") for line in table if line.startswith(dg(data)))
    cells = [c for c in row if c]
    assert cells[1] == "300kB" and cells[-1] == "team=blue"
    # wrong expected digest: refused, nothing committed
    bad = d.ctr("content", "ingest", "--expected-digest", dg(b"else"), "ref-4", input=b"mismatch", check=False)
    assert bad.returncode != 0 and b"unexpected commit digest" in bad.stderr, bad.stderr
    assert dg(b"mismatch") not in d.ctr("content", "ls", "-q").stdout.decode()
    assert d.ctr("content", "rm", dg(other)).stdout.decode() == dg(other) + "\n"
    assert d.ctr("content", "ls", "-q").stdout.decode().split() == [dg(data)]
    assert blobs_on_disk(d) == [dg(data).split(":")[1]]
    missing = d.ctr("content", "get", dg(other), check=False)
    assert missing.returncode != 0 and b"not found" in missing.stderr


def test_pyctr_content_output_is_ctrs(daemon):
    d = daemon(config=NO_GC)
    d.ctr("content", "ingest", "a", input=b"alpha")
    d.ctr("content", "ingest", "b", input=b"bravo" * 1000)
    d.ctr("content", "label", dg(b"alpha"), "x=y")
    for args in (("content", "ls"), ("content", "ls", "-q"), ("content", "active"),
                 ("content", "ls", f"digest=={dg(b'alpha')}")):
        want, got = d.ctr(*args).stdout, d.pyctr(*args).stdout
        assert mask_age(got) == mask_age(want), f"pyctr:\n{got.decode()}\nctr:\n{want.decode()}"
    assert d.pyctr("content", "get", dg(b"alpha")).stdout == b"alpha"
    assert d.pyctr("content", "label", dg(b"alpha"), "x=", "z=1").stdout == b"z=1\n"
    d.pyctr("content", "ingest", "--expected-digest", dg(b"charlie"), "c", input=b"charlie")
    assert dg(b"charlie") in d.ctr("content", "ls", "-q").stdout.decode()
    assert d.pyctr("content", "rm", dg(b"charlie")).stdout.decode() == dg(b"charlie") + "\n"


def test_active_shows_an_ingest_in_progress(daemon):
    d = daemon(config=NO_GC)
    proc = start_ctr_ingest(d, "slow-ref")
    try:
        # ctr sends whole 1 MiB buffers: 1.5 MiB in, 1 MiB is written
        proc.stdin.write(b"x" * (3 << 19))
        proc.stdin.flush()
        row = wait_active(d, "slow-ref", "1.049MB")
        assert row[0] == "slow-ref"
        assert d.pyctr("content", "active").stdout.decode().split("\n")[1].startswith("slow-ref\t")
        proc.stdin.write(b"y" * 1000)
        proc.stdin.close()
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert active_rows(d) == []
    assert d.ctr("content", "ls", "-q").stdout.decode().split() == [dg(b"x" * (3 << 19) + b"y" * 1000)]


def test_namespaces_are_isolated_over_one_file(daemon, tmp_path):
    d = daemon(config=NO_GC)
    data = b"namespaced content\n"
    d.ctr("-n", "a", "content", "ingest", "--expected-digest", dg(data), "r", input=data)
    assert d.ctr("-n", "a", "content", "ls", "-q").stdout.decode().split() == [dg(data)]
    assert d.ctr("-n", "b", "content", "ls", "-q").stdout == b""
    assert d.ctr("-n", "b", "content", "get", dg(data), check=False).returncode != 0
    # b declares the digest of a blob the store has: the server answers that
    # the whole blob is there (offset = size) and ctr seeks its input past
    # it, which a pipe cannot do; real containerd answers the same way
    piped = d.ctr("-n", "b", "content", "ingest", "--expected-digest", dg(data), "r", input=data, check=False)
    assert piped.returncode != 0 and b"illegal seek" in piped.stderr, piped.stderr
    f = tmp_path / "data"
    f.write_bytes(data)
    with open(f, "rb") as stdin:
        d.ctr("-n", "b", "content", "ingest", "--expected-digest", dg(data), "r", stdin=stdin)
    assert d.ctr("-n", "b", "content", "get", dg(data)).stdout == data
    assert blobs_on_disk(d) == [dg(data).split(":")[1]]  # one copy
    d.ctr("-n", "a", "content", "rm", dg(data))
    assert d.ctr("-n", "a", "content", "ls", "-q").stdout == b""
    assert d.ctr("-n", "b", "content", "get", dg(data)).stdout == data
    d.ctr("-n", "b", "content", "rm", dg(data))
    assert blobs_on_disk(d) == []  # the last reference took the file


def test_sigkill_mid_ingest_then_resume(daemon, tmp_path):
    d = daemon(config=NO_GC)
    data = os.urandom(3 << 20)
    f = tmp_path / "big"
    f.write_bytes(data)
    proc = start_ctr_ingest(d, "crash-ref")
    try:
        proc.stdin.write(data[: 5 << 19])  # ctr sends the first 2 MiB of these 2.5
        proc.stdin.flush()
        wait_active(d, "crash-ref", "2.097MB")
        d.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        proc.stdin.close()  # ctr notices the broken stream on its next send
        assert proc.wait(20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    d.kill()
    # the same root, a new daemon
    again = DaemonProcess("pycontainerd", [PYCONTAINERD], d.dir, d.config, {})
    daemon.daemons.append(again)
    again.wait_ready()
    assert again.ctr("content", "ls", "-q").stdout == b""
    assert blobs_on_disk(again) == []
    row = wait_active(again, "crash-ref", "2.097MB")
    assert row[0] == "crash-ref"
    with open(f, "rb") as stdin:
        again.ctr("content", "ingest", "--expected-digest", dg(data), "crash-ref", stdin=stdin)
    assert again.ctr("content", "ls", "-q").stdout.decode().split() == [dg(data)]
    assert again.ctr("content", "get", dg(data)).stdout == data
    assert active_rows(again) == []
    assert again.ctr("content", "rm", dg(data)).stdout.decode() == dg(data) + "\n"
    assert blobs_on_disk(again) == []


def test_a_broken_stream_releases_the_ref_and_the_ingest_resumes(daemon, tmp_path):
    d = daemon(config=NO_GC)
    data = os.urandom(3 << 20)
    f = tmp_path / "blob"
    f.write_bytes(data)
    proc = start_ctr_ingest(d, "broken-ref")
    try:
        proc.stdin.write(data[: 3 << 19])
        proc.stdin.flush()
        wait_active(d, "broken-ref", "1.049MB")
    finally:
        proc.kill()  # the client dies mid-stream: the server closes its writer
        proc.wait()
    with open(f, "rb") as stdin:
        d.ctr("content", "ingest", "--expected-digest", dg(data), "broken-ref", stdin=stdin, timeout=20)
    assert d.ctr("content", "get", dg(data)).stdout == data
    assert active_rows(d) == []
