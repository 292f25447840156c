"""io.containerd.runtime.v1.linux: containerd 1.6's runtime v1, driving
Debian's `containerd-shim` (one per container) over its ttrpc API
`containerd.runtime.linux.shim.v1.Shim`.

    bundle.py   the bundle (state) and work (root) directories, the shim's socket address
    options.py  RuncOptions and CreateOptions, read from their Any
    shim.py     starting the shim (argv, fd 3, logs, OOM score) and watching its process
    task.py     a connected shim: the Task and exec Process, and the events the daemon publishes
    runtime.py  the plugin: create/get/list/delete, reload after a restart, dead shims
"""
