"""What the fuzz of the gRPC surface (test_e2e_fuzz.py) found in the Tasks
service and the runtime v2 plugin, each pinned by a test of its own, with
the real containerd-shim-runc-v2 and runc (World: test_e2e_hostile_tasks).

- An Update without resources, or an Exec without a process spec, reached
  the runc shim, which reads both unchecked and panics: the task lost its
  shim. Both are refused now, and the shim lives on.
- A Create with no rootfs mounts fails in runc after runc made the spec's
  mount points in the bundle's rootfs; removing the bundle then stopped at
  "directory not empty", and every later Create of that id failed on the
  bundle left behind.
- A Delete and a Create right after a task's shim died raced the dead
  shim's cleanup, which removed the new task's bundle under it (the Create
  failed with a Python error; a bind-mounted rootfs could have been emptied
  through it).
"""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from pycontainerd.api.services.tasks.v1 import tasks_pb2
from pycontainerd.api.types.task import task_pb2
from test_e2e_hostile_tasks import TIMEOUT, World, alive, failure, pytestmark  # noqa: F401


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


def bundle_dirs(world: World, cid: str) -> list[str]:
    """The task's bundle and work directories, and their dot-named halves
    of a delete, still there."""
    found = []
    for top in (world.bundles, os.path.join(world.dir, "root", "io.containerd.runtime.v2.task", world.ns)):
        found += [os.path.join(top, n) for n in (cid, "." + cid) if os.path.lexists(os.path.join(top, n))]
    return found


def test_an_update_without_resources_and_an_exec_without_a_spec_are_refused_and_the_shim_lives(world):
    world.container("upd")
    world.create_task("upd")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="upd"), metadata=world.md, timeout=TIMEOUT)
    shims = set(world.shim_pids)

    err = failure(world.tasks.Update, tasks_pb2.UpdateTaskRequest(container_id="upd", annotations={"a": "b"}),
                  metadata=world.md, timeout=TIMEOUT)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "update: resources must be set: invalid argument")
    err = failure(world.tasks.Exec, tasks_pb2.ExecProcessRequest(container_id="upd", exec_id="e1"),
                  metadata=world.md, timeout=TIMEOUT)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "exec: process spec must be set: invalid argument")

    got = world.tasks.Get(tasks_pb2.GetRequest(container_id="upd"), metadata=world.md, timeout=TIMEOUT).process
    assert got.status == task_pb2.RUNNING
    assert all(alive(pid) for pid in shims)
    world.kill_and_delete("upd")
    assert not world.nothing_left()


def test_a_create_with_no_rootfs_fails_in_runc_and_leaves_no_bundle(world):
    world.container("norootfs")  # its spec mounts /proc: runc makes rootfs/proc before it fails
    for _ in range(2):  # the second Create fails as the first did, not on a bundle left behind
        err = failure(world.tasks.Create, tasks_pb2.CreateTaskRequest(container_id="norootfs"),
                      metadata=world.md, timeout=TIMEOUT)
        assert err.code() == grpc.StatusCode.UNKNOWN, err.details()
        assert "runc create failed" in err.details()
        world.assert_clean(err)
        assert bundle_dirs(world, "norootfs") == []
    assert not world.nothing_left()


def test_a_create_right_after_the_shim_died_keeps_its_bundle(world):
    world.container("phoenix")
    world.create_task("phoenix")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="phoenix"), metadata=world.md, timeout=TIMEOUT)
    for pid in world.shim_pids:
        os.kill(pid, signal.SIGKILL)
    # deleted at once (the runtime forgets it while the dead shim's cleanup
    # still runs), then created anew: that task's bundle is not the cleanup's
    try:
        world.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id="phoenix"), metadata=world.md, timeout=TIMEOUT)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()  # the cleanup was quicker
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            world.create_task("phoenix")
            break
        except grpc.RpcError as err:
            assert (err.code(), err.details()) == (grpc.StatusCode.ALREADY_EXISTS, "task phoenix: already exists")
            assert time.monotonic() < deadline, "the dead shim's task stayed listed"
    world.tasks.Start(tasks_pb2.StartRequest(container_id="phoenix"), metadata=world.md, timeout=TIMEOUT)
    got = world.tasks.Get(tasks_pb2.GetRequest(container_id="phoenix"), metadata=world.md, timeout=TIMEOUT).process
    assert got.status == task_pb2.RUNNING
    assert os.path.exists(os.path.join(world.bundles, "phoenix", "config.json"))
    assert os.listdir(os.path.join(world.rootfs, "bin"))  # the bind-mounted rootfs is whole
    world.kill_and_delete("phoenix")
    assert not world.nothing_left()
