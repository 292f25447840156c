"""Reading a cgroup's statistics, as containerd's github.com/containerd/cgroups
library does, into its protobuf messages: `io.containerd.cgroups.v1.Metrics`
(cgroup v1, one hierarchy per controller) and `io.containerd.cgroups.v2.Metrics`
(the unified hierarchy). Also the OOM notifications of both.

- `paths`: which hierarchy the host runs (`mode()`, detected from the mount
  at /sys/fs/cgroup, never assumed) and where a task's cgroup directories
  are (from its pid, or from an OCI spec's cgroupsPath).
- `v1`: `stat(dirs)`, the v1 Metrics of a cgroup given each controller's
  directory; a controller that is absent is left out, as containerd's
  loader does.
- `v2`: `stat(dir)`, the v2 Metrics of one unified directory.
- `oom`: an OOM watcher run on the daemon's event loop (eventfd on v1,
  inotify of memory.events on v2), its fds read with `loop.add_reader`.

Everything here except `oom.OOMWatcher` is plain blocking file reading:
callers on the event loop run it in a worker thread.
"""

from __future__ import annotations

from .paths import Mode, TaskCgroup, load, mode

__all__ = ["Mode", "TaskCgroup", "load", "mode"]
