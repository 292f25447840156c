"""A real pycontainerd daemon running in a thread of the test process."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import types
from typing import Any, Iterable

import toml

from pycontainerd.client.client import Client
from pycontainerd.core import config as configmod
from pycontainerd.core import registry
from pycontainerd.core.daemon import Daemon


def plugin_module(name: str, *registrations: registry.Registration) -> types.ModuleType:
    """A module named `name` whose pycontainerd_plugins hook returns
    `registrations`: pass it in InProcessDaemon's `extra` to load plugins
    defined inside a test."""
    mod = types.ModuleType(name)

    @registry.hookimpl
    def pycontainerd_plugins():
        return list(registrations)

    mod.pycontainerd_plugins = pycontainerd_plugins
    return mod


def short_tempdir(prefix: str = "pcd-") -> str:
    """A directory under /tmp: UNIX socket paths must stay under 107 bytes,
    which pytest's tmp_path often is not."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class InProcessDaemon:
    """Start with `start()`, stop with `stop()`; or use it as a context manager.

    `plugins` are modules (or objects) with a `pycontainerd_plugins` hookimpl,
    registered after the built-ins. `config` is a dict in config.toml's
    shape merged over the defaults (root, state and socket are set to a
    fresh temporary directory). Entry points are not scanned unless asked,
    so what is installed in the environment does not leak into a test.
    """

    def __init__(
        self,
        plugins: Iterable[Any] = (),
        config: dict[str, Any] | None = None,
        entry_points: bool = False,
        builtin: Iterable[str] | None = None,
    ):
        self.dir = short_tempdir()
        self.address = os.path.join(self.dir, "pcd.sock")
        raw: dict[str, Any] = {
            "version": 2,
            "root": os.path.join(self.dir, "root"),
            "state": os.path.join(self.dir, "state"),
            "grpc": {"address": self.address},
        }
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        self.config_path = os.path.join(self.dir, "config.toml")
        with open(self.config_path, "w") as f:
            toml.dump(raw, f)
        self._plugins = list(plugins)
        self._entry_points = entry_points
        self._builtin = None if builtin is None else tuple(builtin)
        self.daemon: Daemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 30.0) -> "InProcessDaemon":
        cfg = configmod.load(self.config_path)
        regs, failures = registry.discover(self._builtin, self._plugins, self._entry_points)
        self.daemon = Daemon(cfg, regs, failures)
        ready = threading.Event()
        error: list[BaseException] = []

        async def run() -> None:
            self._stop = asyncio.Event()
            try:
                await self.daemon.start()
            except BaseException as exc:
                error.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop.wait()
            await self.daemon.stop()

        def thread_main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(run())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=thread_main, name="pycontainerd", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("pycontainerd did not start in time")
        if error:
            self._thread.join()
            raise error[0]
        return self

    def client(self, namespace: str = "default") -> Client:
        return Client(address=self.address, namespace=namespace)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._thread = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "InProcessDaemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
