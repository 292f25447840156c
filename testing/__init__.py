"""Test helpers for pycontainerd and for people writing plugins for it.

`InProcessDaemon` boots a real daemon (real gRPC server on a UNIX socket)
inside the test process, on its own event loop thread, with extra plugin
modules registered directly. The pytest fixtures built on it live in
`pycontainerd.testing.fixtures`, which pytest loads automatically once
pycontainerd is installed.
"""

from .daemon import InProcessDaemon, plugin_module, short_tempdir

__all__ = ["InProcessDaemon", "plugin_module", "short_tempdir"]
