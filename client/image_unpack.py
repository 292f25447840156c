"""Unpacking an image whose content is in the store into a snapshotter, as
containerd's image.Unpack and rootfs.ApplyLayerWithOpts do for `ctr images
import`: layer by layer, a snapshot named by the layer's chain ID is made
(prepared on its parent's chain ID under the key `extract-<unique> <chain>`,
the layer applied by the Diff service, its diff ID checked against the
config, committed); layers already unpacked are skipped. Each applied
layer's blob gets `containerd.io/uncompressed`, and the config
`containerd.io/gc.ref.snapshot.<snapshotter>` naming the top chain ID, so
the image's snapshots live as long as its content (and `ctr images check`
shows it unpacked). All of it under one lease, dropped at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from datetime import datetime, timedelta, timezone

from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifest
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.leases import LABEL_EXPIRE, random_id
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .diff import Diff
from .leases import Leases
from .snapshots import Snapshots

# containerd's defaults.DefaultSnapshotterNSLabel and DefaultSnapshotter (Linux)
NAMESPACE_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
DEFAULT_SNAPSHOTTER = "overlayfs"


class UnpackError(errdefs.Unknown):
    """A plain unpack failure, worded alone as containerd's are."""

    sentinel = ""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """identity.ChainID of every prefix: the first diff ID itself, then
    sha256 of `<parent chain> <diff id>`."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def resolve_snapshotter(client, name: str) -> str:
    """The snapshotter as containerd's client resolves an empty name: the
    namespace's default label, else overlayfs."""
    if name:
        return name
    try:
        return client.namespace_labels(client.namespace).get(NAMESPACE_SNAPSHOTTER_LABEL) or DEFAULT_SNAPSHOTTER
    except errdefs.NotFound:
        return DEFAULT_SNAPSHOTTER


def _unique_part() -> str:
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _manifest(content: ContentClient, target: Descriptor, matcher: platforms.MatchComparer):
    desc = target
    while mediatypes.is_index(desc.media_type):
        index = parse_index(b"".join(content.read(desc.digest)), desc.media_type)
        desc = select_manifest(index, matcher, desc.digest)
    if not mediatypes.is_manifest(desc.media_type):
        raise errdefs.NotFound(f"manifest {desc.digest}")
    return parse_manifest(b"".join(content.read(desc.digest)), desc.media_type)


def unpack(client, image: Image, snapshotter: str = "",
           matcher: platforms.MatchComparer | None = None) -> str:
    """Unpack `image` for `matcher` (the host's platform by default);
    returns the top chain ID."""
    snapshotter = resolve_snapshotter(client, snapshotter)
    leases = Leases(client)
    expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lease = leases.create(random_id(), {LABEL_EXPIRE: expire}).id
    try:
        content = ContentClient(client, lease)
        manifest = _manifest(content, image.target, matcher or platforms.default())
        try:
            config = json.loads(b"".join(content.read(manifest.config.digest)))
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise errdefs.InvalidArgument(f"config {manifest.config.digest}: no rootfs diff_ids") from None
        if len(diff_ids) != len(manifest.layers):
            raise UnpackError("mismatched image rootfs and manifest layers")
        sn, differ = Snapshots(client, snapshotter, lease), Diff(client, lease)
        chains = chain_ids(diff_ids)
        for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, diff_ids, chains)):
            if _apply(sn, differ, layer, diff_id, chain, chains[i - 1] if i else ""):
                content.update(layer.digest, {"containerd.io/uncompressed": diff_id},
                               ["labels.containerd.io/uncompressed"])
        top = chains[-1] if chains else ""
        key = f"containerd.io/gc.ref.snapshot.{snapshotter}"
        content.update(manifest.config.digest, {key: top}, [f"labels.{key}"])
        return top
    finally:
        try:
            leases.delete(lease)
        except errdefs.ContainerdError:
            pass


def _apply(sn: Snapshots, differ: Diff, layer: Descriptor, diff_id: str, chain: str, parent: str) -> bool:
    """One layer (ApplyLayerWithOpts): False when its snapshot is there."""
    try:
        sn.stat(chain)
        return False
    except errdefs.NotFound:
        pass
    key = f"extract-{_unique_part()} {chain}"
    try:
        mounts = sn.prepare(key, parent)
    except errdefs.AlreadyExists:
        return False
    except errdefs.ContainerdError as exc:
        raise type(exc)(f"failed to prepare extraction snapshot {errdefs.quote(key)}: {exc.message}") from None
    try:
        try:
            applied = differ.apply(layer, mounts)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to extract layer {diff_id}: {exc.message}") from None
        if applied.digest != diff_id:
            raise UnpackError(f"wrong diff id calculated on extraction {errdefs.quote(applied.digest)}")
        try:
            sn.commit(chain, key)
        except errdefs.AlreadyExists:
            sn.remove(key)
            return False
    except BaseException:
        try:
            sn.remove(key)
        except errdefs.ContainerdError:
            pass
        raise
    return True
