"""The Images API from the client side (containerd's images store proxy),
plus the two content walks ctr's `images ls` shows: an image's size for
the default platform and the platforms it has.

Errors come back as errdefs classes.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from google.protobuf import field_mask_pb2

from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.imagestore import Image, image_from_pb, image_to_pb
from pycontainerd.pkg.oci.descriptor import Descriptor

from .client import _errors

MEDIA_INDEXES = ("application/vnd.oci.image.index.v1+json",
                 "application/vnd.docker.distribution.manifest.list.v2+json")
MEDIA_MANIFESTS = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
# a manifest larger than this is not read (containerd's limit on what it reads whole)
MAX_MANIFEST = 4 << 20


class Images:
    def __init__(self, client: Any):
        self.client = client
        self.stub = pb_grpc.ImagesStub(client.channel)

    @_errors
    def get(self, name: str) -> Image:
        return image_from_pb(self.client._call(self.stub.Get, pb.GetImageRequest(name=name)).image)

    @_errors
    def list(self, *filters: str) -> list[Image]:
        r = self.client._call(self.stub.List, pb.ListImagesRequest(filters=list(filters)))
        return [image_from_pb(p) for p in r.images]

    @_errors
    def create(self, image: Image) -> Image:
        r = self.client._call(self.stub.Create, pb.CreateImageRequest(image=image_to_pb(image)))
        return image_from_pb(r.image)

    @_errors
    def update(self, image: Image, *paths: str) -> Image:
        req = pb.UpdateImageRequest(image=image_to_pb(image))
        if paths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
        return image_from_pb(self.client._call(self.stub.Update, req).image)

    @_errors
    def delete(self, name: str, sync: bool = False) -> None:
        self.client._call(self.stub.Delete, pb.DeleteImageRequest(name=name, sync=sync))


def _platform_string(p: dict) -> str:
    parts = [p.get("os", ""), p.get("architecture", "")]
    if p.get("variant"):
        parts.append(p["variant"])
    return "/".join(parts)


def _descriptor(d: dict) -> Descriptor:
    return Descriptor(d.get("mediaType", ""), d.get("digest", ""), int(d.get("size", 0)))


class ContentWalk:
    """Reads manifests and configs through `read(digest) -> bytes` (a
    namespace's content) to answer what ctr's `images ls` asks."""

    def __init__(self, read: Callable[[str], bytes]):
        self.read = read

    def _json(self, desc: Descriptor) -> dict:
        if desc.size > MAX_MANIFEST:
            raise ValueError(f"{desc.digest}: larger than {MAX_MANIFEST} bytes")
        return json.loads(self.read(desc.digest))

    def size(self, target: Descriptor, platform: str) -> tuple[int, str]:
        """containerd's Image.Size: the sizes of the target and everything
        below it, following in an index only the first entry for `platform`
        (entries with no platform are followed too). Returns the size and
        the error that stopped the walk ("" when none): like ctr, the
        caller shows what was counted until then."""
        total, todo = 0, [target]
        try:
            while todo:
                desc = todo.pop()
                total += desc.size
                if desc.media_type in MEDIA_INDEXES:
                    entries = self._json(desc).get("manifests", [])
                    matching = [m for m in entries
                                if m.get("platform") and _platform_string(m["platform"]) == platform]
                    todo.extend(_descriptor(m) for m in entries if not m.get("platform"))
                    todo.extend(_descriptor(m) for m in matching[:1])
                elif desc.media_type in MEDIA_MANIFESTS:
                    m = self._json(desc)
                    todo.extend(_descriptor(d) for d in [m.get("config", {}), *m.get("layers", [])])
        except (errdefs.ContainerdError, ValueError) as exc:
            return total, str(exc)
        return total, ""

    def platforms(self, target: Descriptor) -> list[str]:
        """containerd's images.Platforms, formatted, sorted and unique: an
        index entry's platform, or else a manifest's config's."""
        found: set[str] = set()
        todo: list[tuple[Descriptor, dict | None]] = [(target, None)]
        while todo:
            desc, plat = todo.pop()
            if desc.media_type in MEDIA_INDEXES:
                todo.extend((_descriptor(m), m.get("platform")) for m in self._json(desc).get("manifests", []))
            elif desc.media_type in MEDIA_MANIFESTS:
                if plat:
                    found.add(_platform_string(plat))
                else:
                    config = self._json(_descriptor(self._json(desc).get("config", {})))
                    found.add(_platform_string(config))
        return sorted(found)
