"""What ctr's `images check` asks of each image: is all of its content for
this platform in the store (containerd's images.Check: the manifest, then
its config and layers) and is its root filesystem unpacked in a
snapshotter (image.IsUnpacked: the chain ID of the config's diff IDs
exists as a snapshot)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import Manifest, parse_index, parse_manifest, select_manifest
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .image_unpack import chain_ids
from .snapshots import Snapshots


@dataclass
class CheckResult:
    available: bool
    required: list[Descriptor] = field(default_factory=list)
    present: list[Descriptor] = field(default_factory=list)
    missing: list[Descriptor] = field(default_factory=list)


def _read_json(content: ContentClient, desc: Descriptor) -> bytes:
    return b"".join(content.read(desc.digest))


def manifest_for(content: ContentClient, target: Descriptor, matcher: platforms.MatchComparer) -> Manifest:
    """containerd's images.Manifest: through indexes to the best manifest
    for `matcher`; a manifest reached directly must match by its config's
    platform. NotFound when nothing matches or a blob is missing."""
    desc, from_index = target, False
    while mediatypes.is_index(desc.media_type):
        index = parse_index(_read_json(content, desc), desc.media_type)
        desc, from_index = select_manifest(index, matcher, desc.digest), True
    if not mediatypes.is_manifest(desc.media_type):
        raise errdefs.NotFound(f"manifest {desc.digest}")
    manifest = parse_manifest(_read_json(content, desc), desc.media_type)
    if not from_index:
        try:
            config = json.loads(_read_json(content, manifest.config))
            plat = platforms.Platform(str(config.get("os", "")), str(config.get("architecture", "")),
                                      str(config.get("variant", "")))
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise errdefs.InvalidArgument(f"config {manifest.config.digest}: not valid JSON") from None
        if not matcher.match(plat):
            raise errdefs.NotFound(f"manifest {desc.digest}")
    return manifest


def check(content: ContentClient, target: Descriptor, matcher: platforms.MatchComparer) -> CheckResult:
    try:
        manifest = manifest_for(content, target, matcher)
    except errdefs.NotFound:
        return CheckResult(False, [target], [], [target])
    result = CheckResult(True, [manifest.config, *manifest.layers])
    for desc in result.required:
        try:
            content.info(desc.digest)
        except errdefs.NotFound:
            result.missing.append(desc)
            continue
        result.present.append(desc)
    return result


def is_unpacked(content: ContentClient, snapshots: Snapshots, target: Descriptor,
                matcher: platforms.MatchComparer) -> bool:
    manifest = manifest_for(content, target, matcher)
    try:
        diff_ids = list(json.loads(_read_json(content, manifest.config))["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise errdefs.InvalidArgument(f"config {manifest.config.digest}: no rootfs diff_ids") from None
    if not diff_ids:
        return False
    try:
        snapshots.stat(chain_ids(diff_ids)[-1])
        return True
    except errdefs.NotFound:
        return False
