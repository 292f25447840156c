"""runtime v2: a runc task gets the daemon's own runc root unless its
options name one (plugins/runtimes/v2/runc_root.py)."""

from google.protobuf import any_pb2

from pycontainerd.api.runtime.runc.options import oci_pb2
from pycontainerd.pkg.runtime import CreateOpts
from pycontainerd.plugins.runtimes.v2.runc_root import RUNC_OPTIONS, with_runc_root

ROOT = "/run/pcd-test/runc"


def _any(**fields) -> any_pb2.Any:
    return any_pb2.Any(type_url=RUNC_OPTIONS, value=oci_pb2.Options(**fields).SerializeToString())


def _options(a: any_pb2.Any) -> oci_pb2.Options:
    out = oci_pb2.Options()
    out.ParseFromString(a.value)
    return out


def test_ctrs_options_gain_the_root_and_keep_the_rest():
    sent = _any(binary_name="/usr/bin/crun")  # what `ctr run --runc-binary` sends
    opts = with_runc_root(CreateOpts(spec=None, runtime="io.containerd.runc.v2", runtime_options=sent), ROOT)
    got = _options(opts.runtime_options)
    assert (got.root, got.binary_name) == (ROOT, "/usr/bin/crun")
    assert _options(sent).root == ""  # the container's stored options are not touched


def test_no_options_become_runc_options_with_the_root():
    opts = with_runc_root(CreateOpts(spec=None, runtime="io.containerd.runc.v2"), ROOT)
    assert opts.runtime_options.type_url == RUNC_OPTIONS
    assert _options(opts.runtime_options).root == ROOT


def test_task_options_win_over_runtime_options_as_the_shim_sees_them():
    opts = with_runc_root(CreateOpts(spec=None, runtime="io.containerd.runc.v2", runtime_options=_any(),
                                     task_options=_any(systemd_cgroup=True)), ROOT)
    assert _options(opts.task_options).root == ROOT and _options(opts.task_options).systemd_cgroup
    assert _options(opts.runtime_options).root == ""


def test_an_explicit_root_other_runtimes_and_foreign_options_are_left_alone():
    mine = _any(root="/srv/runc")  # ctr run --runc-root
    assert with_runc_root(CreateOpts(spec=None, runtime="io.containerd.runc.v2", runtime_options=mine), ROOT) \
        .runtime_options is mine
    other = CreateOpts(spec=None, runtime="io.containerd.kata.v2")
    assert with_runc_root(other, ROOT) is other
    foreign = any_pb2.Any(type_url="example.com/Options", value=b"\x0a\x01x")
    opts = CreateOpts(spec=None, runtime="io.containerd.runc.v2", runtime_options=foreign)
    assert with_runc_root(opts, ROOT) is opts
