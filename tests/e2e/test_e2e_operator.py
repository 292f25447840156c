"""A careless operator's mistakes, through the real `pycontainerd` binary:
each is refused with one line on stderr and exit 1 (no traceback), and
nothing of the user's (or of another daemon's) is touched; or, where
containerd accepts it, it works."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from e2e_support import (
    PYCONTAINERD, PYCTR, START_TIMEOUT, STOP_TIMEOUT, answers, clean_env, plugin_blocks, run_ctr, run_pycontainerd,
    short_dir,
)

pytestmark = pytest.mark.e2e


def _one_line_refusal(*args: str, **kwargs) -> str:
    proc = run_pycontainerd(*args, **kwargs)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def tmp() -> str:
    d = short_dir("pcd-op-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tree(path: str) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under path."""
    out: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(top, name), path)] = None
        for name in files:
            full = os.path.join(top, name)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path)] = f.read()
    return out


def _sha256(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _commit(address: str, blob: bytes, labels: dict[str, str], namespace: str = "default") -> None:
    """One Content.Write stream: the data, then a commit with labels."""
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2 as pb, content_pb2_grpc as pb_grpc

    digest = _sha256(blob)
    requests = [
        pb.WriteContentRequest(action=pb.WRITE, ref="op-" + digest, total=len(blob), expected=digest, data=blob),
        pb.WriteContentRequest(action=pb.COMMIT, ref="op-" + digest, total=len(blob), expected=digest,
                               offset=len(blob), labels=labels),
    ]
    with grpc.insecure_channel("unix:" + address) as channel:
        list(pb_grpc.ContentStub(channel).Write(iter(requests), metadata=(("containerd-namespace", namespace),),
                                                timeout=30))


@pytest.mark.containerd
def test_a_running_containerds_socket_is_not_taken_over(containerd, tmp):
    # before: containerd takes no lock beside its socket, so pycontainerd
    # bound over it (gRPC deletes the file), and on stop removed it: the
    # running containerd was unreachable from then on
    line = _one_line_refusal("--root", f"{tmp}/root", "--state", f"{tmp}/state", "--address", containerd.address)
    assert line == f"pycontainerd: another process is serving {containerd.address}; refusing to start " \
                   "(its socket is left as it is)", line
    assert answers(containerd.address)
    assert run_ctr(containerd.address, "version").returncode == 0
    assert os.listdir(tmp) == []  # the root and state it made are gone again


@pytest.mark.containerd
def test_a_containerd_root_is_refused_and_left_as_it_is(containerd, tmp):
    # before: pycontainerd started on it, and its GC, which cannot see
    # containerd's bolt database, deleted containerd's blobs (a gc.root
    # labelled one included); its snapshotters wrote sqlite files there
    blob = b"containerd's own blob\n"
    _commit(containerd.address, blob, {"containerd.io/gc.root": "keep"})  # labelled at commit: containerd's GC keeps it
    assert _sha256(blob) in run_ctr(containerd.address, "content", "ls", "-q").stdout.decode()
    containerd.stop()  # stopped, as an operator reusing its root would have it
    before = _tree(containerd.root)
    line = _one_line_refusal("--root", containerd.root, "--state", f"{tmp}/state", "--address", f"{tmp}/s.sock")
    assert line == (f"pycontainerd: root {containerd.root} is a containerd root (it holds "
                    "io.containerd.metadata.v1.bolt); refusing to start: pycontainerd needs a root of its own"), line
    assert _tree(containerd.root) == before
    assert os.listdir(tmp) == []


def test_relative_root_state_and_address_are_the_working_directorys(tmp):
    # containerd takes them relative to its working directory; before, a
    # bare socket name failed with "cannot create the socket directory : ..."
    proc = subprocess.Popen(
        [PYCONTAINERD, "--root", "r", "--state", "s", "--address", "x.sock"], cwd=tmp,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(),
    )
    try:
        sock = os.path.join(tmp, "x.sock")
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(sock, timeout=0.5):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "never served"
            time.sleep(0.05)
        out = subprocess.run([PYCTR, "--address", "x.sock", "namespaces", "ls"], cwd=tmp, capture_output=True,
                             env=clean_env(), timeout=30)
        assert out.returncode == 0, out.stderr
        assert os.path.isdir(os.path.join(tmp, "r", "io.containerd.metadata.v1.sqlite"))
        assert os.path.isdir(os.path.join(tmp, "s"))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
    assert not os.path.exists(os.path.join(tmp, "x.sock"))


def test_a_bad_namespace_is_reported_once_as_containerd_words_it(daemon):
    # before: the sentinel was doubled ("...: invalid argument: invalid argument")
    d = daemon()
    expected = ('namespace validation: identifier "bad name!" must match '
                "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n")
    for tool in (d.ctr, d.pyctr):
        proc = tool("--namespace", "bad name!", "snapshots", "ls", check=False)
        assert proc.returncode == 1
        assert proc.stderr.decode().split(": ", 1)[1] == expected, proc.stderr


def test_pyctr_zero_timeouts_mean_what_they_mean_to_ctr(daemon):
    # ctr: --timeout 0 is no timeout, --connect-timeout 0 the default (10s);
    # before, `--timeout 0s` failed every call at once and `--connect-timeout 0`
    # printed a traceback from grpc's polling thread
    d = daemon()
    for flags in (["--timeout", "0"], ["--timeout", "0s"], ["--connect-timeout", "0"]):
        proc = d.pyctr(*flags, "snapshots", "ls", check=False)
        assert proc.returncode == 0 and proc.stderr == b"", (flags, proc.stderr)
        assert proc.stdout.startswith(b"KEY"), proc.stdout


def test_a_passed_deadline_reads_as_ctrs():
    # grpc-python words its own deadline "Deadline Exceeded"; pyctr printed
    # "Deadline Exceeded: context deadline exceeded" where ctr prints the sentinel alone
    import grpc

    from pycontainerd.pkg import errdefs, errgrpc

    err = errgrpc.from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert isinstance(err, errdefs.DeadlineExceeded) and str(err) == "context deadline exceeded"
    err = errgrpc.from_grpc(grpc.StatusCode.CANCELLED, "Cancelled")
    assert isinstance(err, errdefs.Canceled) and str(err) == "context canceled"
    # a server's own message is kept
    assert str(errgrpc.from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, "gc timed out")) == \
        "gc timed out: context deadline exceeded"


@pytest.mark.parametrize(
    "text, expected",
    [
        # the file that names a missing or unreadable import is named too
        ('imports = ["@/nope.toml"]\n', "@/config.toml: imports: config file @/nope.toml does not exist"),
        ('imports = ["@"]\n', "@/config.toml: imports: cannot read config file @: Is a directory"),
        # before: "cannot read config file <dir>: Is a directory"
        ('imports = [""]\n', "@/config.toml: imports[0] is empty"),
        # before: "unsupported config version 1", a version the file never names
        (None, "@/config.toml: no version set (that is version 1): set version = 2"),
        ('version = 3\n', "@/config.toml: unsupported config version 3: set version = 2"),
        # before: refused only after every plugin ran, leaving root and state
        ('required_plugins = ["io.containerd.snapshotter.v1.overlay"]\n',
         "required plugin io.containerd.snapshotter.v1.overlay not included "
         "(did you mean io.containerd.snapshotter.v1.overlayfs?)"),
        ('required_plugins = ["io.containerd.snapshotter.v1.zfs"]\n',
         "required plugin io.containerd.snapshotter.v1.zfs not included"),
    ],
    ids=["import-missing", "import-directory", "import-empty", "no-version", "version-3", "required-typo",
         "required-unknown"],
)
def test_config_mistake_is_one_line_and_creates_nothing(tmp, text, expected):
    body = f'root = "{tmp}/root"\nstate = "{tmp}/state"\n[grpc]\naddress = "{tmp}/s.sock"\n'
    if text is None:
        config = body
    elif text.startswith("version"):
        config = text + body
    else:
        config = "version = 2\n" + text.replace("@", tmp) + body
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(config)
    line = _one_line_refusal("--config", path)
    assert line == "pycontainerd: " + expected.replace("@", tmp), line
    assert os.listdir(tmp) == ["config.toml"]


def _first_write_offset(address: str, namespace: str, blob: bytes) -> int:
    """The offset the daemon answers to a writer's first STAT that declares
    the blob's digest and size: the whole size when it shares the blob."""
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2 as pb, content_pb2_grpc as pb_grpc

    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with grpc.insecure_channel("unix:" + address) as channel:
        stream = pb_grpc.ContentStub(channel).Write(
            iter([pb.WriteContentRequest(action=pb.STAT, ref="r-" + namespace, total=len(blob), expected=digest)]),
            metadata=(("containerd-namespace", namespace),), timeout=30,
        )
        return next(iter(stream)).offset


@pytest.mark.parametrize("section, policy, offset", [
    (None, "shared", "all"),
    ("io.containerd.metadata.v1.bolt", "isolated", 0),  # containerd's section name, as its config.toml has it
    ("io.containerd.metadata.v1.sqlite", "isolated", 0),
])
def test_content_sharing_policy_is_honoured(daemon, section, policy, offset):
    # before: the bolt section was "not registered, ignored": an operator who
    # asked for isolated namespaces silently got shared blobs
    config = {"plugins": {section: {"content_sharing_policy": policy}}} if section else {}
    # no collector: once ctr's lease is gone nothing holds the blob in "a",
    # and a collection before the second writer would leave nothing to share
    config["disabled_plugins"] = ["io.containerd.gc.v1.scheduler"]
    d = daemon(config=config)
    blob = b"one blob, two namespaces\n"
    d.ctr("--namespace", "a", "content", "ingest", "--expected-digest",
          "sha256:" + hashlib.sha256(blob).hexdigest(), "r", input=blob)
    assert _first_write_offset(d.address, "b", blob) == (len(blob) if offset == "all" else offset)
    exports = plugin_blocks(d.ctr("plugins", "ls", "-d").stdout)["io.containerd.metadata.v1.sqlite"]
    assert ["policy", policy] in [line.split() for line in exports], exports


def test_a_bolt_section_mistake_is_refused(tmp):
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(f'version = 2\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n[grpc]\naddress = "{tmp}/s.sock"\n'
                '[plugins."io.containerd.metadata.v1.bolt"]\ncontent_sharing_polcy = "isolated"\n')
    line = _one_line_refusal("--config", path)
    assert 'unknown key "content_sharing_polcy"' in line and 'did you mean "content_sharing_policy"?' in line, line
    assert os.listdir(tmp) == ["config.toml"]


def test_socket_path_of_107_bytes_serves_and_108_is_refused(tmp):
    def address(n: int) -> str:
        head = os.path.join(tmp, "")
        return head + "a" * (n - len(head) - len(".sock")) + ".sock"

    long = address(108)
    line = _one_line_refusal("--root", f"{tmp}/root", "--state", f"{tmp}/state", "--address", long)
    # Go's %q, as containerd words it (before: Python's repr, in single quotes)
    assert line == f'pycontainerd: "{long}": unix socket path too long (> 107)', line
    assert os.listdir(tmp) == []

    sock = address(107)
    # the ttrpc socket (<address>.ttrpc by default) would be longer still: give it its own path
    with open(f"{tmp}/config.toml", "w") as f:
        f.write(f'version = 2\n[ttrpc]\naddress = "{tmp}/t.ttrpc"\n')
    proc = subprocess.Popen([PYCONTAINERD, "--config", f"{tmp}/config.toml", "--root", f"{tmp}/root",
                             "--state", f"{tmp}/state", "--address", sock],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=clean_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(sock, timeout=0.5):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "never served"
            time.sleep(0.05)
        assert b"Server:" in run_ctr(sock, "version").stdout
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
