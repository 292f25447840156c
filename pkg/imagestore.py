"""The image store's record (containerd's images.Image): what the metadata
store keeps, the images service serves and clients read. An image is a
name for a target descriptor (usually a manifest or an index) plus labels;
its target's annotations travel with it. Also here: the filter adaptor
containerd's image store matches List filters with, and the record <->
protobuf conversions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycontainerd.pkg.oci.descriptor import Descriptor


@dataclass
class Image:
    """A named image: its target, labels and timestamps (nanoseconds, UTC)."""

    name: str
    target: Descriptor = field(default_factory=lambda: Descriptor("", "", 0))
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def _map_field(path: list[str], values: dict[str, str]) -> tuple[str, bool]:
    # containerd's checkMap: the rest of the path, joined by '.', is the key
    if not values:
        return "", False
    key = ".".join(path)
    return (values[key], True) if key in values else ("", False)


def adapt_image(image: Image):
    """containerd's adaptImage: name, target.digest, target.mediatype,
    labels.<key> and annotations.<key> (the target's)."""

    def field_of(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return image.name, bool(image.name)
        if head == "target":
            if len(path) < 2:
                return "", False
            if path[1] == "digest":
                return image.target.digest, bool(image.target.digest)
            if path[1] == "mediatype":
                return image.target.media_type, bool(image.target.media_type)
            return "", False
        if head == "labels":
            return _map_field(path[1:], image.labels)
        if head == "annotations":
            return _map_field(path[1:], image.target.annotations)
        return "", False

    return field_of


def image_to_pb(image: Image) -> Any:
    """The containerd.services.images.v1.Image message of `image`."""
    from pycontainerd.api.services.images.v1 import images_pb2
    from pycontainerd.pkg.oci.descriptor import to_pb
    from pycontainerd.pkg.timestamps import to_pb as ts_to_pb

    return images_pb2.Image(name=image.name, labels=image.labels, target=to_pb(image.target),
                            created_at=ts_to_pb(image.created_at), updated_at=ts_to_pb(image.updated_at))


def image_from_pb(p: Any) -> Image:
    """An Image from a containerd.services.images.v1.Image message."""
    from pycontainerd.pkg.oci.descriptor import from_pb
    from pycontainerd.pkg.timestamps import from_pb as ts_from_pb

    return Image(name=p.name, target=from_pb(p.target), labels=dict(p.labels),
                 created_at=ts_from_pb(p.created_at), updated_at=ts_from_pb(p.updated_at))
