"""Manifests and indexes (OCI and Docker schema 2): parsed from the bytes a
registry or a content store hands out, written back as canonical JSON, and
the platform choice a pull makes out of an index."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs, platforms
from ..oci.descriptor import Descriptor
from . import mediatypes


@dataclass
class ManifestDescriptor(Descriptor):
    """A descriptor as an index lists it: with the platform it is for."""

    platform: platforms.Platform | None = None


@dataclass
class Manifest:
    """An image manifest: one config and its layers, in order."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Index:
    """An index (manifest list): manifests for several platforms."""

    media_type: str
    manifests: list[ManifestDescriptor]
    annotations: dict[str, str] = field(default_factory=dict)


def _descriptor(obj: Any, where: str) -> ManifestDescriptor:
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument(f"{where}: descriptor is not an object")
    try:
        media_type, dgst, size = obj.get("mediaType", ""), obj["digest"], obj["size"]
    except KeyError as exc:
        raise errdefs.InvalidArgument(f"{where}: descriptor has no {exc.args[0]}") from None
    if not isinstance(dgst, str) or not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
        raise errdefs.InvalidArgument(f"{where}: descriptor has a bad digest or size")
    plat = None
    p = obj.get("platform")
    if isinstance(p, dict):
        plat = platforms.Platform(str(p.get("os", "")), str(p.get("architecture", "")),
                                  str(p.get("variant", "")), str(p.get("os.version", "")))
    annotations = obj.get("annotations") or {}
    return ManifestDescriptor(media_type, dgst, size, dict(annotations), plat)


def _load(data: bytes) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise errdefs.InvalidArgument("manifest is not valid JSON") from None
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument("manifest is not a JSON object")
    return obj


def detect_media_type(data: bytes) -> str:
    """The media type a manifest or index says it is, or what its shape
    says when it has no mediaType field (OCI makes the field optional)."""
    obj = _load(data)
    mt = obj.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if "manifests" in obj:
        return mediatypes.OCI_INDEX
    if "config" in obj:
        return mediatypes.OCI_MANIFEST
    raise errdefs.InvalidArgument("unknown manifest type")


def parse_manifest(data: bytes, media_type: str = "") -> Manifest:
    obj = _load(data)
    mt = obj.get("mediaType") or media_type or mediatypes.OCI_MANIFEST
    if "manifests" in obj:
        raise errdefs.InvalidArgument("expected a manifest, got an index")
    config = _descriptor(obj.get("config"), "config")
    layers = [_descriptor(d, f"layer {i}") for i, d in enumerate(obj.get("layers") or [])]
    return Manifest(mt, Descriptor(config.media_type, config.digest, config.size, config.annotations),
                    [Descriptor(d.media_type, d.digest, d.size, d.annotations) for d in layers],
                    dict(obj.get("annotations") or {}))


def parse_index(data: bytes, media_type: str = "") -> Index:
    obj = _load(data)
    mt = obj.get("mediaType") or media_type or mediatypes.OCI_INDEX
    if not isinstance(obj.get("manifests"), list):
        raise errdefs.InvalidArgument("expected an index, it has no manifests list")
    return Index(mt, [_descriptor(d, f"manifest {i}") for i, d in enumerate(obj["manifests"])],
                 dict(obj.get("annotations") or {}))


def _descriptor_json(d: Descriptor, plat: platforms.Platform | None = None) -> dict:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(d.annotations)
    if plat is not None:
        p: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
        if plat.os_version:
            p["os.version"] = plat.os_version
        if plat.variant:
            p["variant"] = plat.variant
        out["platform"] = p
    return out


def manifest_bytes(m: Manifest) -> bytes:
    """`m` as JSON (schemaVersion 2), ready to push or store."""
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": m.media_type, "config": _descriptor_json(m.config),
                           "layers": [_descriptor_json(d) for d in m.layers]}
    if m.annotations:
        obj["annotations"] = m.annotations
    return json.dumps(obj, separators=(",", ":")).encode()


def index_bytes(ix: Index) -> bytes:
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": ix.media_type,
                           "manifests": [_descriptor_json(d, d.platform) for d in ix.manifests]}
    if ix.annotations:
        obj["annotations"] = ix.annotations
    return json.dumps(obj, separators=(",", ":")).encode()


def descriptor_of(media_type: str, data: bytes) -> Descriptor:
    """The descriptor of `data`: its sha256 digest and size."""
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def select_manifests(index: Index, matcher: platforms.MatchComparer) -> list[ManifestDescriptor]:
    """The index's manifests that `matcher` accepts, best first (as
    containerd's images.Manifest does: a stable sort by preference). An
    entry without a platform is taken as matching, as containerd does."""
    ranked = []
    for pos, d in enumerate(index.manifests):
        if d.platform is None:
            ranked.append((0, pos, d))
            continue
        rank = matcher.rank(d.platform)
        if rank is not None:
            ranked.append((rank, pos, d))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in ranked]


def select_manifest(index: Index, matcher: platforms.MatchComparer, index_digest: str) -> ManifestDescriptor:
    """The best manifest for `matcher`; NotFound worded as containerd's
    images.Manifest words it when none matches."""
    found = select_manifests(index, matcher)
    if not found:
        raise errdefs.NotFound(f"no match for platform in manifest {index_digest}")
    return found[0]
