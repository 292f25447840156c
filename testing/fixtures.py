"""pytest fixtures for plugin authors (loaded through the pytest11 entry point).

Override `pycontainerd_plugins` to hand your plugin modules to the daemon
and `pycontainerd_config` to set config.toml values, then ask for
`pycontainerd_client` (a connected client) or `pycontainerd_daemon`:

    import my_snapshotter.plugin

    @pytest.fixture
    def pycontainerd_plugins():
        return [my_snapshotter.plugin]

    def test_listed(pycontainerd_client):
        uris = [p.uri for p in pycontainerd_client.plugins()]
        assert "io.containerd.snapshotter.v1.mine" in uris
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .daemon import InProcessDaemon


@pytest.fixture
def pycontainerd_plugins() -> list[Any]:
    """Modules with a `pycontainerd_plugins` hookimpl to register."""
    return []


@pytest.fixture
def pycontainerd_config() -> dict[str, Any]:
    """config.toml values (as a dict) merged over the test defaults."""
    return {}


@pytest.fixture
def pycontainerd_daemon(pycontainerd_plugins: list[Any], pycontainerd_config: dict[str, Any]) -> Iterator[InProcessDaemon]:
    daemon = InProcessDaemon(plugins=pycontainerd_plugins, config=pycontainerd_config)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def pycontainerd_client(pycontainerd_daemon: InProcessDaemon):
    client = pycontainerd_daemon.client()
    try:
        yield client
    finally:
        client.close()
