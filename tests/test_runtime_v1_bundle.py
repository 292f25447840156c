"""Runtime v1's bundle against what a hostile spec or a tampered bundle
holds: the socket removal deletes only a shim socket where shims' sockets
live, and a spec's root gid mapping must be a uint32 before it is chowned to."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from pycontainerd.pkg import errdefs
from pycontainerd.plugins.runtimes.v1.bundle import SOCKET_ROOT, Bundle, remove_socket


def test_remove_socket_leaves_a_file_and_a_socket_elsewhere(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("keep")
    remove_socket(f"unix://{regular}")
    elsewhere = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(elsewhere)
        remove_socket(f"unix://{elsewhere}")
        remove_socket(f"unix://{SOCKET_ROOT}/s/../../..{elsewhere}")  # a way out of the directory
    assert regular.read_text() == "keep" and os.path.exists(elsewhere)


@pytest.mark.skipif(os.geteuid() != 0, reason=f"{SOCKET_ROOT}/s is root's")
def test_remove_socket_removes_a_shim_socket_but_not_a_file_in_its_directory():
    os.makedirs(f"{SOCKET_ROOT}/s", exist_ok=True)
    path = f"{SOCKET_ROOT}/s/v1h-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        remove_socket(f"unix://{path}")
    assert not os.path.exists(path)
    with open(path, "w") as f:
        f.write("not a socket")
    try:
        remove_socket(f"unix://{path}")
        assert os.path.exists(path)
    finally:
        os.unlink(path)


@pytest.mark.parametrize("host_id, kind", [('"root"', "string"), ("1099511627776", "number 1099511627776"),
                                           ("-7", "number -7"), ("true", "bool"), ("[0]", "array")])
def test_a_root_gid_mapping_that_is_no_uint32_is_refused_plainly(tmp_path, host_id, kind):
    spec = f'{{"linux": {{"gidMappings": [{{"containerID": 0, "hostID": {host_id}, "size": 1}}]}}}}'.encode()
    with pytest.raises(errdefs.Unknown) as info:
        Bundle.create(str(tmp_path / "root"), str(tmp_path / "state"), "default", "v1h-unit", spec)
    assert info.value.message == (f"json: cannot unmarshal {kind} into Go struct field "
                                  "LinuxIDMapping.linux.gidMappings.hostID of type uint32")
    assert os.listdir(tmp_path / "state" / "default") == []  # nothing of the bundle is left
