"""The pull's progress record and its terminal drawing (real rich, drawn
into a terminal-like console): each state a blob goes through is shown
with its bytes and rate, and the record is safe to update from many
threads at once."""

from __future__ import annotations

import io
import re
import threading

from rich.console import Console

from pycontainerd.client.commands.snapshots import human_bytes
from pycontainerd.client.pull_progress import LiveProgress, Tracker, short_key

LAYER = "layer-sha256:" + "ab" * 32
CONFIG = "config-sha256:" + "cd" * 32
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drawn(tracker: Tracker) -> list[str]:
    out = io.StringIO()
    live = LiveProgress(tracker, out, human_bytes)
    live.console = Console(file=out, force_terminal=True, width=160, highlight=False)
    live.console.print(live.render())
    return [line.rstrip() for line in ANSI.sub("", out.getvalue()).splitlines()]


def test_each_state_is_drawn_with_bytes_and_rate():
    clock = Clock()
    t = Tracker(clock)
    t.set("example.com/app:1", "resolving")
    assert drawn(t)[0].split()[:2] == ["example.com/app:1:", "resolving"]
    t.set("example.com/app:1", "resolved")
    t.set(CONFIG, "exists", total=1500, offset=1500)
    t.set(LAYER, "waiting", total=4 << 20)
    lines = drawn(t)
    assert lines[2].split()[:2] == [short_key(LAYER) + ":", "waiting"] and "0.0 B/4.0 MiB" in lines[2]
    t.set(LAYER, "downloading", offset=0)
    clock.now += 2
    t.advance(LAYER, 2 << 20)
    lines = drawn(t)
    assert "downloading" in lines[2] and "2.0 MiB/4.0 MiB" in lines[2] and "1.0 MiB/s" in lines[2]
    t.advance(LAYER, 2 << 20)
    clock.now += 2
    t.set(LAYER, "downloaded")
    clock.now += 10  # the rate is the download's, not diluted by what follows
    t.set(LAYER, "unpacking")
    assert "unpacking" in drawn(t)[2] and "1.0 MiB/s" in drawn(t)[2]
    t.set(LAYER, "done")
    lines = drawn(t)
    assert [line.split()[1] for line in lines[:3]] == ["resolved", "exists", "done"]
    assert lines[3].startswith("elapsed: 14.0s") and "total: 4.0 MiB" in lines[3]


def test_short_keys_keep_kind_and_twelve_hex_digits():
    assert short_key(LAYER) == "layer-sha256:" + "ab" * 6
    assert short_key("docker.io/library/busybox:latest") == "docker.io/library/busybox:latest"


def test_updates_from_many_threads_add_up():
    t = Tracker()
    t.set(LAYER, "downloading", total=8 * 1000)

    def work() -> None:
        for _ in range(1000):
            t.advance(LAYER, 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.entries()[0].offset == 8000
