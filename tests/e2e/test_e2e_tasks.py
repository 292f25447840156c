"""The real `ctr tasks` against pycontainerd where no runtime is needed:
the Tasks service is served, lists nothing, and answers a missing
container, a container with no task and a checkpoint with containerd's
words. The daemon runs without any runtime plugin, so what is checked here
holds whichever runtime is merged in."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

# the built-ins minus any runtime plugin, as a config's disabled_plugins
RUNTIME_PLUGINS = ["io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux"]


@pytest.fixture
def d(daemon):
    return daemon(config={"disabled_plugins": RUNTIME_PLUGINS})


def test_ctr_tasks_ls_lists_nothing(d):
    out = d.ctr("tasks", "ls")
    assert out.stdout.decode().split() == ["TASK", "PID", "STATUS"]
    assert out.stderr == b""


@pytest.mark.parametrize("args", [
    ("tasks", "start", "ghost"),
    ("tasks", "kill", "ghost"),
    ("tasks", "ps", "ghost"),
    ("tasks", "pause", "ghost"),
    ("tasks", "resume", "ghost"),
    ("tasks", "rm", "ghost"),
    ("tasks", "checkpoint", "ghost"),
    ("tasks", "metrics", "ghost"),
    ("tasks", "exec", "--exec-id", "e1", "ghost", "/bin/true"),
])
def test_ctr_tasks_on_a_missing_container_say_containerds_not_found(d, args):
    out = d.ctr(*args, check=False)
    assert out.returncode != 0
    assert b'container "ghost" in namespace "default": not found' in out.stderr


def test_ctr_tasks_on_a_container_without_a_runtime_name_the_missing_plugin(d):
    # a container record needs no image: ctr's --config reads a spec file
    spec_path = f"{d.dir}/config.json"
    with open(spec_path, "w") as f:
        f.write('{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"}}')
    d.ctr("containers", "create", "--config", spec_path, "c1")
    out = d.ctr("tasks", "start", "c1", check=False)
    assert out.returncode != 0
    assert b"runtime for task io.containerd.runc.v2: no plugins registered for io.containerd.runtime.v2: not found" \
        in out.stderr
    d.ctr("containers", "rm", "c1")
