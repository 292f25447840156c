"""io.containerd.runtime.v2.task: containerd 1.6's runtime v2, driving
`containerd-shim-<name>-<version>` binaries over ttrpc.

    bundle.py   the bundle directory a task's shim works in (state) and its work dir (root)
    binary.py   the shim binary: name rules, the `start` and `delete` actions
    shim.py     a connected shim: the Task and exec Process over containerd.task.v2.Task
    manager.py  the plugin: create/get/list/delete, reconnect after a restart, dead shims
"""
