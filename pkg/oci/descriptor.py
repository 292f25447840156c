"""The OCI content descriptor: what a differ's Apply and Diff return, and
what images, manifests and the client's diff flow pass around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Descriptor:
    """An OCI descriptor: media type, digest, size and annotations."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


def from_pb(p: Any) -> Descriptor:
    """A Descriptor from a containerd.types.Descriptor message."""
    return Descriptor(p.media_type, p.digest, p.size, dict(p.annotations))


def to_pb(d: Descriptor) -> Any:
    """The containerd.types.Descriptor message of `d`."""
    from pycontainerd.api.types import descriptor_pb2

    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=d.annotations)
