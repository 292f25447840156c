"""Real cgroups for tests: a test makes its own cgroup (on v1 a unique
directory under each controller's mount, below this process's own cgroup
there; on v2 one under this process's unified cgroup), moves child
processes it starts into it, and removes everything it made by pid and
rmdir. The cgroup layout is read here from /proc directly, not through
pkg.cgroups, so the tests check the library against the kernel, not
against itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
ROOT = "/sys/fs/cgroup"


def fstype(path: str) -> str:
    """The filesystem type mounted at `path` ('' when nothing is)."""
    found = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-", 6)
            if fields[4] == path:
                found = fields[sep + 1]
    return found


def own_cgroups() -> tuple[dict[str, str], str | None]:
    v1: dict[str, str] = {}
    unified = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, names, path = line.rstrip("\n").split(":", 2)
            if names == "":
                unified = path
            for n in names.split(","):
                v1[n] = path
    return v1, unified


def v1_available() -> bool:
    return fstype(ROOT) != "cgroup2" and all(fstype(f"{ROOT}/{c}") == "cgroup" for c in V1_CONTROLLERS)


def v2_mount() -> str | None:
    """A cgroup2 mount to make a cgroup in: /sys/fs/cgroup (unified host)
    or /sys/fs/cgroup/unified (hybrid host)."""
    for path in (ROOT, f"{ROOT}/unified"):
        if fstype(path) == "cgroup2":
            return path
    return None


class Cgroup:
    """One test cgroup. `dirs` maps a v1 controller (or '' for v2) to its directory."""

    def __init__(self, version: int, name: str | None = None):
        self.version = version
        self.name = name or f"pcd-test-{uuid.uuid4().hex[:12]}"
        self.dirs: dict[str, str] = {}
        self.children: list[subprocess.Popen] = []
        v1, unified = own_cgroups()
        if version == 1:
            for c in V1_CONTROLLERS:
                d = os.path.join(ROOT, c, v1[c].lstrip("/"), self.name)
                os.mkdir(d)
                self.dirs[c] = d
        else:
            mount = v2_mount()
            assert mount is not None and unified is not None
            d = os.path.join(mount, unified.lstrip("/"), self.name)
            os.mkdir(d)
            self.dirs[""] = d

    def write(self, controller: str, file: str, value: str) -> None:
        with open(os.path.join(self.dirs[controller], file), "w") as f:
            f.write(value)

    def read(self, controller: str, file: str) -> str:
        with open(os.path.join(self.dirs[controller], file)) as f:
            return f.read()

    def start(self, code: str) -> subprocess.Popen:
        """A python child that waits for a line on stdin before running
        `code`, moved into this cgroup before it is told to go."""
        script = "import sys\nsys.stdin.readline()\n" + code
        p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.children.append(p)
        for d in self.dirs.values():
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(p.pid))
        p.stdin.write("go\n")
        p.stdin.flush()
        return p

    def remove(self) -> None:
        for p in self.children:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        for d in self.dirs.values():
            for attempt in range(50):  # a reaped task may linger in the cgroup for a moment
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


BURN = "while True:\n    pass\n"


def hold(mib: int, threads: int = 0) -> str:
    """Code that holds `mib` MiB written (so charged), starts `threads`
    sleeping threads, says `ready`, then sleeps."""
    return (
        "import threading, time\n"
        f"data = b'x' * ({mib} << 20)\n"
        f"for _ in range({threads}):\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )


def poll(condition, timeout: float = 60.0, interval: float = 0.1):
    """Wait for `condition()` to return a true value and return it; fail
    after `timeout` (a bound against hangs, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(interval)
