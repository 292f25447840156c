"""The container record (containerd's containers.Container): what the
metadata store keeps, the containers service serves and the tasks service
reads to create a task. A container is metadata only: an id, the runtime
that will run it (name and options), the OCI spec, the snapshot holding its
root filesystem, the image it came from, labels and extensions. Also here:
the filter adaptor containerd's container store matches List filters with,
and the record <-> protobuf conversions.

`spec`, the runtime options and the extensions are
`google.protobuf.Any` messages, kept as they were sent (containerd never
reads them either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RuntimeInfo:
    """The runtime a container's task runs under: `name` picks the shim
    (`io.containerd.runc.v2`), `options` are handed to it (an Any, or None)."""

    name: str = ""
    options: Any | None = None


@dataclass
class Container:
    """A container record; timestamps are nanoseconds since the epoch (UTC)."""

    id: str
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    spec: Any | None = None  # google.protobuf.Any holding the OCI spec
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: int = 0
    updated_at: int = 0
    extensions: dict[str, Any] = field(default_factory=dict)


def adapt_container(container: Container):
    """containerd's adaptContainer: id, runtime.name, image and
    labels.<key> (the rest of the path, joined by '.', is the key)."""

    def field_of(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "id":
            return container.id, bool(container.id)
        if head == "runtime":
            if len(path) < 2 or path[1] != "name":
                return "", False
            return container.runtime.name, bool(container.runtime.name)
        if head == "image":
            return container.image, bool(container.image)
        if head == "labels":
            key = ".".join(path[1:])
            if not container.labels or key not in container.labels:
                return "", False
            return container.labels[key], True
        return "", False

    return field_of


def _any_or_none(msg: Any, name: str) -> Any | None:
    """A copy of the message's Any field `name`, or None when it is unset."""
    from google.protobuf import any_pb2

    if not msg.HasField(name):
        return None
    out = any_pb2.Any()
    out.CopyFrom(getattr(msg, name))
    return out


def container_to_pb(c: Container) -> Any:
    """The containerd.services.containers.v1.Container message of `c`."""
    from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
    from pycontainerd.pkg.timestamps import to_pb as ts_to_pb

    out = pb.Container(id=c.id, labels=c.labels, image=c.image, snapshotter=c.snapshotter,
                       snapshot_key=c.snapshot_key, created_at=ts_to_pb(c.created_at),
                       updated_at=ts_to_pb(c.updated_at))
    out.runtime.name = c.runtime.name  # containerd always sends the runtime message
    if c.runtime.options is not None:
        out.runtime.options.CopyFrom(c.runtime.options)
    if c.spec is not None:
        out.spec.CopyFrom(c.spec)
    for name, ext in c.extensions.items():
        out.extensions[name].CopyFrom(ext)
    return out


def container_from_pb(p: Any) -> Container:
    """A Container from a containerd.services.containers.v1.Container
    message (timestamps are the store's to set, so they are not read)."""
    from google.protobuf import any_pb2

    runtime = RuntimeInfo()
    if p.HasField("runtime"):
        runtime = RuntimeInfo(p.runtime.name, _any_or_none(p.runtime, "options"))
    extensions = {}
    for name, ext in p.extensions.items():
        copy = any_pb2.Any()
        copy.CopyFrom(ext)
        extensions[name] = copy
    return Container(id=p.id, labels=dict(p.labels), image=p.image, runtime=runtime,
                     spec=_any_or_none(p, "spec"), snapshotter=p.snapshotter, snapshot_key=p.snapshot_key,
                     extensions=extensions)
