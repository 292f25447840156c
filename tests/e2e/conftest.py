"""End-to-end fixtures: real daemons as subprocesses, the real `ctr`.

The machinery (DaemonProcess, the ctr/pyctr runners, output parsers) is in
e2e_support.py, which the test modules import directly.

Every daemon gets its own short directory under /tmp (UNIX socket paths are
limited to 107 bytes), is started as a subprocess, is waited for until it
answers a Version call, and is stopped by its PID. Nothing is ever killed by
name, so the suite can run under `pytest -n auto` next to other daemons.

    daemon(config={...}, env={...})   a running pycontainerd (DaemonProcess)
    ctr(address, *args)               the real ctr, bytes captured
    pyctr(address, *args)             our pyctr, bytes captured
    containerd                        a running real containerd (DaemonProcess)
    example_plugin_site / broken_plugin_site
                                      PYTHONPATH entries holding the test plugin
                                      distributions, installed once per run
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from e2e_support import (
    CONTAINERD,
    CTR,
    REPO,
    DaemonFactory,
    DaemonProcess,
    install_distribution,
    run_ctr,
    run_pyctr,
    start_containerd,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containerd: starts a real containerd (deselect with -m 'not containerd')"
    )


def _need(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed")


@pytest.fixture
def daemon() -> Iterator[DaemonFactory]:
    """Factory: `daemon(config={...}, env={...}, wait=True)` starts
    `pycontainerd --config <tmp>/config.toml` and, with wait, returns once it
    answers. Stopped by PID at teardown (exit 0 and socket removed checked)."""
    factory = DaemonFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def ctr() -> Callable[..., subprocess.CompletedProcess]:
    _need(CTR)
    return run_ctr


@pytest.fixture
def pyctr() -> Callable[..., subprocess.CompletedProcess]:
    return run_pyctr


@pytest.fixture
def containerd() -> Iterator[DaemonProcess]:
    """A real containerd, everything under one temp dir, stopped by PID."""
    _need(CONTAINERD)
    _need(CTR)
    proc = start_containerd()
    try:
        yield proc
    finally:
        try:
            if proc.running:
                proc.stop()
        finally:
            shutil.rmtree(proc.dir, ignore_errors=True)


# -- third-party plugin distributions, installed for real ----------------------

@pytest.fixture(scope="session")
def shared_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by all xdist workers of this run (this process's
    base temp directory without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


@pytest.fixture(scope="session")
def example_plugin_site(shared_tmp: Path) -> str:
    """A PYTHONPATH entry holding tests/example_plugin, installed."""
    return install_distribution(REPO / "tests" / "example_plugin", shared_tmp)


@pytest.fixture(scope="session")
def broken_plugin_site(shared_tmp: Path) -> str:
    """A PYTHONPATH entry holding tests/broken_plugins, installed."""
    return install_distribution(REPO / "tests" / "broken_plugins", shared_tmp)


