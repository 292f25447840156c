"""The `pycontainerd` script's fast path for `publish`, which the v1 shim
runs once per event: the shim's command line goes to core/publish.py
without importing the daemon; anything else goes to core/main.py."""

from __future__ import annotations

import subprocess
import sys

from pycontainerd.core.entry import _publish_args


def test_the_shims_command_line_takes_the_fast_path():
    argv = ["--address", "/run/p.sock", "publish", "--topic", "/tasks/exit", "--namespace", "default"]
    assert _publish_args(argv) == ("/run/p.sock", "/tasks/exit", "default")
    assert _publish_args(["-a=/s", "publish", "--topic=/t", "--namespace=n"]) == ("/s", "/t", "n")
    assert _publish_args(["--address", "/s", "publish"]) == ("/s", "", "")  # publish refuses the empty topic


def test_other_command_lines_go_to_the_daemons_main():
    assert _publish_args(["publish", "--topic", "/t", "--namespace", "n"]) is None  # address from the config
    assert _publish_args(["--address", "/s"]) is None
    assert _publish_args(["--address", "/s", "config", "default"]) is None
    assert _publish_args(["--address", "/s", "publish", "--bogus"]) is None  # main's parser says what is wrong
    assert _publish_args(["--address"]) is None


def test_publish_does_not_import_the_daemon():
    code = ("import sys\nfrom pycontainerd.core import entry\n"
            "rc = entry.main(['--address', '/nonexistent/p.sock', 'publish', '--topic', '/t', '--namespace', 'n'])\n"
            "print(rc, 'pycontainerd.core.daemon' in sys.modules, 'pycontainerd.core.registry' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], input=b"", capture_output=True, timeout=60)
    assert out.stdout.split() == [b"1", b"False", b"False"], out.stderr
    assert out.stderr.startswith(b'pycontainerd: failed to dial "/nonexistent/p.sock"')


def test_reading_the_event_is_bounded_in_time_and_size():
    import os

    import pytest

    from pycontainerd.core.publish import PublishError, read_event

    r, w = os.pipe()
    try:
        os.write(w, b"\x0a\x01x")
        with pytest.raises(PublishError, match="no end after 0.2s"):  # a writer that never closes
            read_event(r, timeout=0.2)
        os.write(w, b"y" * 100)
        with pytest.raises(PublishError, match="larger than 64 bytes"):
            read_event(r, limit=64)
        os.close(w)
        w = -1
        assert read_event(r) == b""  # what was left, then the end
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
