"""Where runc keeps its containers' state for this daemon's shims.

containerd-shim-runc-v2 runs runc with `--root <Options.root>/<namespace>`,
and `/run/containerd/runc` when the runc options leave the root empty (as
ctr and pyctr do). A real containerd on the same host uses that default
too, and so would every other pycontainerd: a container id used by two of
them in one namespace would meet in runc's state ("container with given ID
already exists"), and one daemon's `runc delete` could remove the other's.
So a runc task created here gets this daemon's own root (`<state>/runc`)
when its options name none; the options stored with the container are
untouched, only what the shim receives carries it (the shim writes it to
the bundle's options.json, so its cleanup action finds it too).
"""

from __future__ import annotations

import dataclasses

from pycontainerd.pkg.runtime import CreateOpts

RUNC_RUNTIMES = "io.containerd.runc."
RUNC_OPTIONS = "containerd.runc.v1.Options"


def with_runc_root(opts: CreateOpts, root: str) -> CreateOpts:
    """`opts` with `root` as runc's root, for a runc runtime whose options
    name no root (options of another type, or undecodable ones, go to the
    shim as they are: the shim judges them)."""
    if not opts.runtime.startswith(RUNC_RUNTIMES):
        return opts
    from google.protobuf import any_pb2
    from google.protobuf.message import DecodeError

    from pycontainerd.api.runtime.runc.options import oci_pb2

    name = "task_options" if opts.task_options is not None else "runtime_options"
    current = getattr(opts, name)
    options = oci_pb2.Options()
    if current is not None:
        if current.type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS:
            return opts
        try:
            options.ParseFromString(current.value)
        except DecodeError:
            return opts
    if options.root:
        return opts
    options.root = root
    packed = any_pb2.Any(type_url=current.type_url if current is not None else RUNC_OPTIONS,
                         value=options.SerializeToString())
    return dataclasses.replace(opts, **{name: packed})
