"""Installing pycontainerd as the machine's daemon (docs/install.md): the
shipped systemd unit is valid and has what containerd's unit has, and the
daemon speaks systemd's readiness protocol that `Type=notify` relies on."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from e2e_support import PYCONTAINERD, answers

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "pycontainerd.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_the_unit_has_what_containerds_unit_has():
    service = _unit()["Service"]
    assert service["ExecStartPre"] == "-/sbin/modprobe overlay"
    assert service["Type"] == "notify"
    assert service["Delegate"] == "yes"
    assert service["KillMode"] == "process"  # containers outlive a daemon restart
    assert service["Restart"] == "always"
    for limit in ("LimitNOFILE", "LimitNPROC", "TasksMax"):
        assert service[limit] == "infinity"
    assert service["OOMScoreAdjust"] == "-999"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart exists: point it at this checkout's daemon
    unit = tmp_path / "pycontainerd.service"
    unit.write_text(UNIT.read_text().replace("/opt/pycontainerd/bin/pycontainerd", PYCONTAINERD))

    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pycontainerd.service" not in out.stderr  # no warnings about our unit


def test_the_daemon_tells_systemd_when_it_serves_and_when_it_stops(daemon):
    d = daemon.tempdir()
    notify_path = os.path.join(d, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(notify_path)
        listener.settimeout(30)
        proc = daemon(env={"NOTIFY_SOCKET": notify_path}, wait=False)
        assert listener.recv(4096) == b"READY=1"
        # READY comes only once the socket answers: systemd starts dependants then
        assert answers(proc.config["grpc"]["address"])
        proc.send_signal(signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
        assert proc.wait_exit() == 0
