"""The task monitor contract (containerd's runtime.TaskMonitor): what a
plugin of type io.containerd.monitor.v1 offers the Tasks service.

The Tasks service calls `monitor(info)` once a task is created (and, at
start, for every task the runtimes already run), and `stop(info)` when the
task is deleted. A monitor then watches the task on its own: the cgroups
monitor exports its cgroup statistics to Prometheus and publishes
`/tasks/oom` when the kernel OOM-kills in its cgroup.

`TaskInfo` carries what a monitor needs without handing it the runtime's
task object: the namespace and id, the init process's pid (the cgroup is
found from /proc/<pid>/cgroup, where the task really is) and the spec's
`linux.cgroupsPath` (used when there is no pid), the extra metric labels
(containerd passes `{"runtime": <container's runtime name>}` on create,
none for tasks found at start), and whether the monitor should publish the
task's OOMs: containerd 1.6's monitor does so only for runtime v1 tasks,
since containerd-shim-runc-v2 publishes `/tasks/oom` itself; the Tasks
service sets `watch_oom=False` for io.containerd.runtime.v2 tasks so no
OOM is published twice.

Concurrency: both methods are coroutines called on the daemon's event loop;
monitoring is idempotent per (namespace, id), and stopping a task that is
not monitored does nothing. Errors are pkg.errdefs classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# what the daemon checks on an io.containerd.monitor.v1 instance
MONITOR_METHODS = ("monitor", "stop")


@dataclass(frozen=True)
class TaskInfo:
    namespace: str
    id: str
    pid: int = 0  # the task's init process; 0 when unknown
    cgroups_path: str = ""  # the OCI spec's linux.cgroupsPath (cgroupfs form: /<namespace>/<id>)
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    watch_oom: bool = True


class TaskMonitor(Protocol):
    async def monitor(self, info: TaskInfo) -> None: ...

    async def stop(self, info: TaskInfo) -> None: ...
