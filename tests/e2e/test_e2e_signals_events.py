"""Stopping the daemon with signals, and `ctr events` as a live subscriber."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from e2e_support import CTR, PROBE_TOPIC, clean_env, until_subscribed

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_daemon_cleanly(daemon, sig):
    d = daemon()
    assert os.path.exists(d.address)
    assert d.stop(sig) == 0, d.log()
    assert not os.path.exists(d.address)
    assert "Traceback" not in d.log()


class Subscriber:
    """`ctr events` running in the background, its output in a file."""

    def __init__(self, address: str, directory: str, *filters: str):
        self.path = os.path.join(directory, "events.out")
        self._out = open(self.path, "wb")
        self.proc = subprocess.Popen(
            [CTR, "--address", address, "events", *filters],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT, env=clean_env(),
        )

    def text(self) -> str:
        with open(self.path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


@pytest.fixture
def subscribe(ctr):
    started: list[Subscriber] = []

    def start(address: str, directory: str, *filters: str) -> Subscriber:
        s = Subscriber(address, directory, *filters)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _until(predicate, timeout: float = 15.0, step=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_ctr_events_shows_namespace_create(daemon, pyctr, subscribe):
    d = daemon()
    events = subscribe(d.address, d.dir)
    # there is no "subscribed" signal: keep creating namespaces until the
    # subscriber has seen one (the first may race the subscription)
    created: list[str] = []

    def create() -> None:
        if events.proc.poll() is None and "/namespaces/create" not in events.text():
            created.append(f"ev{len(created)}")
            pyctr(d.address, "namespaces", "create", created[-1], "team=a")

    assert _until(lambda: "/namespaces/create" in events.text(), step=create), events.text()
    assert events.proc.poll() is None, events.text()  # still subscribed
    events.stop()

    lines = [line for line in events.text().splitlines() if "/namespaces/create" in line]
    # "<timestamp> <namespace> <topic> <event as JSON>", as ctr prints it
    fields = lines[0].split(" ")
    topic_at = fields.index("/namespaces/create")
    assert fields[topic_at - 1] == "default"
    event = " ".join(fields[topic_at + 1 :])
    assert '"name":"ev' in event and '"team":"a"' in event, lines
    assert any(f'"name":"{name}"' in line for line in lines for name in created)


def test_ctr_events_filter_by_topic(daemon, pyctr, subscribe):
    d = daemon()
    events = subscribe(d.address, d.dir, 'topic=="/namespaces/delete"')
    pyctr(d.address, "namespaces", "create", "keep")
    deleted: list[str] = []

    def churn() -> None:
        name = f"gone{len(deleted)}"
        pyctr(d.address, "namespaces", "create", name)
        pyctr(d.address, "namespaces", "rm", name)
        deleted.append(name)

    assert _until(lambda: "/namespaces/delete" in events.text(), step=churn), events.text()
    events.stop()
    text = events.text()
    assert "/namespaces/create" not in text and "/namespaces/delete" in text, text


def test_daemon_stops_while_a_subscriber_is_connected(daemon, subscribe):
    d = daemon()
    events = subscribe(d.address, d.dir)
    until_subscribed(d.address, lambda: PROBE_TOPIC in events.text())
    assert events.proc.poll() is None, events.text()
    started = time.monotonic()
    assert d.stop() == 0, d.log()
    assert time.monotonic() - started < 10
    assert not os.path.exists(d.address)
    # the subscriber sees its stream end instead of hanging
    events.proc.wait(10)


def test_json_logs_record_every_plugin_load_with_its_duration(daemon):
    import json

    d = daemon({"debug": {"format": "json", "level": "debug"}})
    d.stop()
    records = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    loaded = {r["plugin"]: r for r in records if r.get("event") == "loaded plugin"}
    assert "io.containerd.metadata.v1.sqlite" in loaded
    assert all(r["duration_ms"] >= 0 and r["level"] == "info" for r in loaded.values())
    assert any(r.get("event") == "serving" for r in records)


def test_debug_level_in_config_filters_info_lines(daemon):
    d = daemon({"debug": {"level": "error"}})
    d.stop()
    assert "loaded plugin" not in d.log()
