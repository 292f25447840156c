"""Unpacking an image whose content is in the store into a snapshotter, as
containerd's client unpacker (image.Unpack, rootfs.ApplyLayerWithOpts)
does, for `pyctr images pull` and `pyctr images import` alike, against any
containerd API:

- a layer's chain ID is its diff ID (the first layer), else the sha256 of
  "<parent chain ID> <diff ID>" (the OCI image spec's ChainID);
- a layer whose chain ID is already a committed snapshot is skipped;
- otherwise a snapshot `extract-<unique> <chainID>` is prepared on the
  parent, labelled `containerd.io/snapshot.ref=<chainID>`, the layer is
  applied through the Diff service, the diff ID it reports is checked
  against the config's, and the snapshot is committed as the chain ID
  (removed again if any step fails);
- the applied layer's blob gets `containerd.io/uncompressed=<diffID>`, and
  the config `containerd.io/gc.ref.snapshot.<snapshotter>=<top chain ID>`,
  so GC keeps the chain as long as the image holds the config (and `ctr
  images check` shows it unpacked).

Everything runs under the caller's lease. Layers are applied in order, one
at a time (each needs its parent committed); the pull pipeline
(client/pull.py) runs this while later layers still download, telling it
through `ready` when each blob is in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Any, Callable

from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifest
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .diff import Diff
from .snapshots import Snapshots

# containerd's defaults.DefaultSnapshotterNSLabel and DefaultSnapshotter (Linux)
NAMESPACE_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
DEFAULT_SNAPSHOTTER = "overlayfs"

LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."
MAX_JSON = 4 << 20  # manifests and configs are read whole only up to this size
PREPARE_TRIES = 3


class UnpackError(errdefs.Unknown):
    """A plain unpack failure, worded alone as containerd's are."""

    sentinel = ""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of every prefix of `diff_ids` (OCI image spec)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def resolve_snapshotter(client: Any, name: str) -> str:
    """The snapshotter as containerd's client resolves an empty name: the
    namespace's default label, else overlayfs."""
    if name:
        return name
    try:
        return client.namespace_labels(client.namespace).get(NAMESPACE_SNAPSHOTTER_LABEL) or DEFAULT_SNAPSHOTTER
    except errdefs.NotFound:
        return DEFAULT_SNAPSHOTTER


def _unique_part() -> str:
    """containerd's uniquePart: the clock's nanoseconds and a little randomness."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def read_json(content: ContentClient, desc: Descriptor) -> dict:
    """A manifest, index or config blob, refused past MAX_JSON bytes."""
    if desc.size > MAX_JSON:
        raise errdefs.FailedPrecondition(f"{desc.digest}: larger than {MAX_JSON} bytes")
    try:
        return json.loads(b"".join(content.read(desc.digest)))
    except (ValueError, UnicodeDecodeError):
        raise errdefs.InvalidArgument(f"{desc.digest}: not valid JSON") from None


def manifest_for(content: ContentClient, target: Descriptor, matcher: platforms.MatchComparer):
    """The manifest of `target` for the platform (images.Manifest)."""
    desc = target
    while mediatypes.is_index(desc.media_type):
        data = b"".join(content.read(desc.digest))
        desc = select_manifest(parse_index(data, desc.media_type), matcher, desc.digest)
    if not mediatypes.is_manifest(desc.media_type):
        raise errdefs.NotFound(f"unexpected media type {desc.media_type} for {desc.digest}")
    manifest = parse_manifest(b"".join(content.read(desc.digest)), desc.media_type)
    if desc is target:  # a lone manifest: its config says which platform it is
        config = read_json(content, manifest.config)
        plat = platforms.Platform(config.get("os", ""), config.get("architecture", ""), config.get("variant", ""))
        if not matcher.match(plat):
            raise errdefs.NotFound(f"manifest {target.digest}")
    return manifest


def unpack(client: Any, image: Image, snapshotter: str, lease: str,
           matcher: platforms.MatchComparer | None = None) -> str:
    """Unpack the layers of `image` for `matcher` (the host's platform by
    default) into `snapshotter` under `lease`; returns the top chain ID."""
    content = ContentClient(client, lease=lease)
    manifest = manifest_for(content, image.target, matcher or platforms.default())
    return unpack_manifest(client, content, manifest, snapshotter, lease)


def unpack_manifest(client: Any, content: ContentClient, manifest: Any, snapshotter: str, lease: str,
                    ready: Callable[[Descriptor], None] | None = None,
                    state: Callable[[Descriptor, str], None] | None = None) -> str:
    """Unpack one manifest's layers in order; returns the top chain ID.

    The pull pipeline calls this while layers still download: `ready(layer)`
    blocks until that layer's blob is committed in the content store (so
    its digest was verified) and raises if its download failed; it is only
    called for a layer that must be applied (a chain ID already committed is
    skipped without waiting). `state(layer, "unpacking" | "done")` reports
    progress."""
    rootfs = read_json(content, manifest.config).get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise errdefs.InvalidArgument(f"config {manifest.config.digest}: no rootfs diff_ids")
    layers = list(manifest.layers)
    if len(diff_ids) != len(layers):
        raise UnpackError("mismatched image rootfs and manifest layers")
    sn = Snapshots(client, snapshotter, lease)
    differ = Diff(client, lease)
    chain = chain_ids(diff_ids)
    for i, layer in enumerate(layers):
        parent = chain[i - 1] if i else ""
        if _committed(sn, chain[i]):
            if state is not None:
                state(layer, "done")
            continue
        if ready is not None:
            ready(layer)
        if state is not None:
            state(layer, "unpacking")
        if _apply_layer(sn, differ, layer, diff_ids[i], chain[i], parent):
            content.update(layer.digest, {LABEL_UNCOMPRESSED: diff_ids[i]}, ["labels." + LABEL_UNCOMPRESSED])
        if state is not None:
            state(layer, "done")
    top = chain[-1] if chain else ""
    label = LABEL_GC_SNAPSHOT + snapshotter
    content.update(manifest.config.digest, {label: top}, ["labels." + label])
    return top


def _committed(sn: Snapshots, chain_id: str) -> bool:
    try:
        sn.stat(chain_id)
        return True
    except errdefs.NotFound:
        return False


def _apply_layer(sn: Snapshots, differ: Diff, layer: Descriptor, diff_id: str, chain_id: str, parent: str) -> bool:
    """One layer as the unpacker applies it; False when the chain ID was
    committed by someone else meanwhile (nothing applied)."""
    labels = {LABEL_SNAPSHOT_REF: chain_id}
    key = ""
    for _ in range(PREPARE_TRIES):
        key = f"extract-{_unique_part()} {chain_id}"
        try:
            mounts = sn.prepare(key, parent, labels)
            break
        except errdefs.AlreadyExists:
            try:
                sn.stat(chain_id)
                return False  # someone else committed it meanwhile
            except errdefs.NotFound:
                continue
    else:
        raise errdefs.AlreadyExists("unable to prepare extraction snapshot")
    try:
        try:
            applied = differ.apply(layer, mounts)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f"failed to extract layer {diff_id}: {exc.message}") from None
        if applied.digest != diff_id:
            raise UnpackError(f"wrong diff id calculated on extraction {errdefs.go_quote(applied.digest)}")
        sn.commit(chain_id, key, labels)
    except errdefs.AlreadyExists:
        _remove_quietly(sn, key)
        return False
    except BaseException:
        _remove_quietly(sn, key)
        raise
    return True


def _remove_quietly(sn: Snapshots, key: str) -> None:
    try:
        sn.remove(key)
    except errdefs.ContainerdError:
        pass
