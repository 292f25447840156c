"""An image's root filesystem on a directory, and what its snapshots use:
the logic of ctr's `images mount`, `images unmount` and `images usage`,
against any containerd API.

`mount_image` follows ctr: a lease whose id is the target directory
(24 hours, labelled `containerd.io/gc.ref.snapshot.<snapshotter>=<target>`
so that GC keeps the snapshot the lease names), the image unpacked for the
platform under that lease, a view (or, with `rw`, an active snapshot)
whose key is the target directory on the top chain ID, and its mounts
mounted there. A mount that fails removes the snapshot and the lease.
`unmount_image` unmounts everything on the directory and, with `remove`,
deletes the lease and the snapshot. `image_usage` lists the size and
inodes of each snapshot of the image's chain, top first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pycontainerd.pkg import errdefs, mount, platforms
from pycontainerd.pkg.leases import LABEL_EXPIRE
from pycontainerd.pkg.imagestore import Image

from .content import ContentClient
from .image_check import is_unpacked
from .image_unpack import LABEL_GC_SNAPSHOT, chain_ids, manifest_for, read_json, unpack
from .images import Images
from .leases import Leases
from .snapshots import Snapshots


class MountError(errdefs.Unknown):
    """A failure worded by the mount logic alone (no error kind appended)."""

    def __str__(self) -> str:
        return self.message


def diff_ids_of(content: ContentClient, image: Image, matcher: platforms.MatchComparer) -> list[str]:
    """The image's rootfs diff IDs for the platform (containerd's
    Image.RootFS)."""
    manifest = manifest_for(content, image.target, matcher)
    rootfs = read_json(content, manifest.config).get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise errdefs.InvalidArgument(f"config {manifest.config.digest}: no rootfs diff_ids")
    return diff_ids


def _lease_for(client: Any, target: str, snapshotter: str) -> bool:
    """The target's lease; True when this call created it."""
    expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        Leases(client).create(target, {LABEL_EXPIRE: expire, LABEL_GC_SNAPSHOT + snapshotter: target})
        return True
    except errdefs.AlreadyExists:
        return False


def mount_image(client: Any, ref: str, target: str, snapshotter: str, plat: platforms.Platform,
                rw: bool = False, on_chain: Callable[[str], None] | None = None) -> str:
    """Mount `ref`'s root filesystem on `target`; returns the top chain ID
    (also handed to `on_chain` before mounting, where ctr prints it)."""
    created = _lease_for(client, target, snapshotter)
    try:
        image = Images(client).get(ref)
        matcher = platforms.only(plat)
        try:
            unpack(client, image, snapshotter, target, matcher)
        except errdefs.ContainerdError as exc:
            raise MountError(f"error unpacking image: {exc}") from None
        chain = chain_ids(diff_ids_of(ContentClient(client, lease=target), image, matcher))
        top = chain[-1] if chain else ""
        if on_chain:
            on_chain(top)
        sn = Snapshots(client, snapshotter, lease=target)
        try:
            mounts = sn.prepare(target, top) if rw else sn.view(target, top)
        except errdefs.AlreadyExists:
            mounts = sn.mounts(target)
        try:
            mount.mount_all(mounts, target)
        except OSError:
            try:
                sn.remove(target)
            except errdefs.NotFound:
                pass
            raise
        return top
    except BaseException:
        if created:
            try:
                Leases(client).delete(target)
            except errdefs.ContainerdError:
                pass
        raise


def unmount_image(client: Any, target: str, snapshotter: str, remove: bool = False) -> None:
    """Unmount everything on `target`; with `remove`, drop its lease and
    its snapshot too (either may already be gone)."""
    mount.unmount_all(target)
    if not remove:
        return
    try:
        Leases(client).delete(target)
    except errdefs.NotFound:
        pass
    except errdefs.ContainerdError as exc:
        raise MountError(f"error deleting lease: {exc}") from None
    try:
        Snapshots(client, snapshotter).remove(target)
    except errdefs.NotFound:
        pass
    except errdefs.ContainerdError as exc:
        raise MountError(f"error removing snapshot: {exc}") from None


@dataclass
class SnapshotUsage:
    key: str
    size: int
    inodes: int


def image_usage(client: Any, ref: str, snapshotter: str) -> list[SnapshotUsage]:
    """The usage of every snapshot in `ref`'s chain for this machine's
    platform, from the top down (containerd 1.7's `ctr images usage`)."""
    try:
        image = Images(client).get(ref)
    except errdefs.ContainerdError as exc:
        raise MountError(f"failed to ensure if image {ref} exists: {exc}") from None
    content, sn = ContentClient(client), Snapshots(client, snapshotter)
    try:
        unpacked = is_unpacked(content, sn, image.target, platforms.default())
    except errdefs.ContainerdError as exc:
        raise MountError(f"failed to ensure if image {ref} has been unpacked in snapshotter {snapshotter}: "
                         f"{exc}") from None
    if not unpacked:
        raise MountError(f"image {ref} isn't unpacked in snapshotter {snapshotter}")
    chain = chain_ids(diff_ids_of(content, image, platforms.default()))
    out: list[SnapshotUsage] = []
    key = chain[-1] if chain else ""
    while key:
        try:
            size, inodes = sn.usage(key)
        except errdefs.ContainerdError as exc:
            raise MountError(f"failed to get usage for snapshot {key}: {exc}") from None
        out.append(SnapshotUsage(key, size, inodes))
        try:
            key = sn.stat(key).parent
        except errdefs.ContainerdError as exc:
            raise MountError(f"failed to ensure if snapshot {key} has parent or not: {exc}") from None
    return out

