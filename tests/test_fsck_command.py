"""`pycontainerd fsck` is a command of the daemon's binary whose module
(plugins/metadata/fsck.py) is imported only when it runs, parses its own
arguments, and refuses what it cannot check with exit status 2. (What it
finds and repairs is tested on real daemon roots in
tests/e2e/test_e2e_fsck.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

MAIN = [sys.executable, "-m", "pycontainerd.core.main"]


def test_the_daemon_parser_does_not_import_fsck():
    probe = ("import sys; from pycontainerd.core import main; main._parser().parse_known_args(['fsck', '--repair']); "
             "print('pycontainerd.plugins.metadata.fsck' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"


def test_help_names_the_flags_and_says_verify_is_slow():
    r = subprocess.run([*MAIN, "fsck", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: pycontainerd fsck ")
    for flag in ("--config", "--root", "--repair", "--verify-content"):
        assert flag in r.stdout
    assert "slow" in r.stdout.split("--verify-content")[-1]


def test_what_cannot_be_checked_is_refused_with_status_2(tmp_path):
    r = subprocess.run([*MAIN, "fsck", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "pycontainerd fsck: error:" in r.stderr
    missing = tmp_path / "nothing-here"
    r = subprocess.run([*MAIN, "fsck", "--root", str(missing)], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"pycontainerd fsck: root {missing} does not exist\n"
    # a root without a metadata database has nothing to check against; the lock it took is gone again
    r = subprocess.run([*MAIN, "--root", str(tmp_path), "fsck"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "no metadata database at" in r.stderr
    assert os.listdir(tmp_path) == []
    # a containerd root is not ours to judge
    (tmp_path / "io.containerd.metadata.v1.bolt").mkdir()
    r = subprocess.run([*MAIN, "fsck", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "is a containerd root" in r.stderr
