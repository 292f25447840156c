"""io.containerd.snapshotter.v1.overlayfs: snapshots as overlayfs layers.

containerd's layout under the plugin root: `metadata.db`, and per snapshot
`snapshots/<id>/fs` (the layer: the upperdir while active, a lowerdir once
committed) and `snapshots/<id>/work` (overlay's workdir, active only).

Mounts are containerd's: an active snapshot without parent is a plain rw
bind of its fs; a view of a single committed parent is a read-only bind of
that parent's fs (overlay needs two layers); everything else is an
`overlay` mount with `lowerdir=` (nearest parent first) and, when active,
`upperdir=`/`workdir=`. Deletions in the upper layer become real overlayfs
whiteouts and opaque directories, which the differ turns into OCI
whiteouts. Lowerdir lists longer than one page are compacted at mount time
(see mount.py), as containerd 1.6 does.

The plugin skips itself when its root's filesystem cannot host overlay
(e.g. the root is itself on an overlay without d_type, or the kernel lacks
overlay), after trying a real two-lower overlay mount there, as containerd's
overlayutils.Supported does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterable

from pycontainerd.core.context import InitContext, SkipPlugin
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import mount as mountlib
from pycontainerd.pkg import platforms
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_VIEW, Info, Mount

from .base import LocalSnapshotter, disk_usage, wrap
from .storage import Snapshot


def supports_index() -> bool:
    """containerd sets index=off whenever the kernel has the knob."""
    return os.path.exists("/sys/module/overlay/parameters/index")


def check_supported(root: str) -> None:
    """Mount a real overlay with two lowerdirs under `root`; raise OSError
    with the reason when that fails."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    td = tempfile.mkdtemp(prefix="overlayfs-check-", dir=root)
    try:
        for d in ("lower1", "lower2", "upper", "work", "merged"):
            os.mkdir(os.path.join(td, d))
        opts = [f"lowerdir={td}/lower2:{td}/lower1", f"upperdir={td}/upper", f"workdir={td}/work"]
        try:
            mountlib.mount(Mount("overlay", "overlay", opts), f"{td}/merged")
        except OSError as e:
            raise OSError(f"failed to mount overlay: {(e.strerror or str(e)).lower()}") from None
        mountlib.unmount(f"{td}/merged")
    finally:
        shutil.rmtree(td, ignore_errors=True)


# with upperdir_label, the label that tells where a snapshot's layer lives
UPPERDIR_LABEL = "containerd.io/snapshot/overlay.upperdir"


class OverlaySnapshotter(LocalSnapshotter):
    def __init__(self, root: str, upperdir_label: bool = False):
        super().__init__(root)
        self.index_off = supports_index()
        self.upperdir_label = upperdir_label
        self._snapshots = os.path.join(os.path.abspath(root), "snapshots")

    # -- upperdir_label: as containerd, Stat, Update and Walk (after its
    # filters) report the layer's directory; the label is never stored

    def _with_upperdir(self, sid: str, info: Info) -> Info:
        info.labels = {**info.labels, UPPERDIR_LABEL: self.upper_path(sid)}
        return info

    def stat(self, key: str) -> Info:
        if not self.upperdir_label:
            return super().stat(key)
        with self.ms.transaction() as tx:
            sid, info, _ = tx.get_info(key)
        return self._with_upperdir(sid, info)

    def update(self, info: Info, fieldpaths: Iterable[str] = ()) -> Info:
        updated = super().update(info, fieldpaths)
        if not self.upperdir_label:
            return updated
        with self.ms.transaction() as tx:
            sid, _, _ = tx.get_info(updated.name)
        return self._with_upperdir(sid, updated)

    def walk(self, *filter_strings: str) -> list[Info]:
        infos = super().walk(*filter_strings)
        if not self.upperdir_label:
            return infos
        with self.ms.transaction() as tx:
            ids = {key: sid for sid, key in tx.id_map().items()}
        return [self._with_upperdir(ids[info.name], info) for info in infos]

    # plain concatenation: a deep chain builds hundreds of these per mount
    def upper_path(self, sid: str) -> str:
        return f"{self._snapshots}/{sid}/fs"

    def work_path(self, sid: str) -> str:
        return f"{self._snapshots}/{sid}/work"

    def active_dir(self, sid: str) -> str:
        return self.upper_path(sid)

    def mounts_of(self, s: Snapshot) -> list[Mount]:
        if not s.parent_ids:
            ro = "ro" if s.kind == KIND_VIEW else "rw"
            return [Mount(type="bind", source=self.upper_path(s.id), options=[ro, "rbind"])]
        options = ["index=off"] if self.index_off else []
        if s.kind == KIND_ACTIVE:
            options += [f"workdir={self.work_path(s.id)}", f"upperdir={self.upper_path(s.id)}"]
        elif len(s.parent_ids) == 1:
            return [Mount(type="bind", source=self.upper_path(s.parent_ids[0]), options=["ro", "rbind"])]
        base = self._snapshots
        options.append("lowerdir=" + ":".join([f"{base}/{p}/fs" for p in s.parent_ids]))
        return [Mount(type="overlay", source="overlay", options=options)]

    def _create(self, kind: int, key: str, parent: str, labels: dict[str, str] | None) -> list[Mount]:
        td = tempfile.mkdtemp(prefix="new-", dir=os.path.join(self.root, "snapshots"))
        try:
            os.mkdir(os.path.join(td, "fs"), 0o755)
            os.chmod(os.path.join(td, "fs"), 0o755)
            if kind == KIND_ACTIVE:
                os.mkdir(os.path.join(td, "work"), 0o711)
            with self.ms.transaction(True) as tx:
                s = tx.create_snapshot(kind, key, parent, labels)
                if s.parent_ids:
                    # the new layer's root is owned like its parent's
                    st = os.stat(self.upper_path(s.parent_ids[0]))
                    os.lchown(os.path.join(td, "fs"), st.st_uid, st.st_gid)
                os.rename(td, os.path.join(self.root, "snapshots", s.id))
                td = ""
        finally:
            if td:
                shutil.rmtree(td, ignore_errors=True)
        return self.mounts_of(s)

    def mounts(self, key: str) -> list[Mount]:
        try:
            return super().mounts(key)
        except Exception as exc:
            raise wrap(exc, "failed to get active mount") from None

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        with self.ms.transaction(True) as tx:
            sid, _, _ = tx.get_info(key)
            usage = disk_usage(self.upper_path(sid))
            try:
                tx.commit_active(key, name, usage, labels)
            except Exception as exc:
                raise wrap(exc, "failed to commit snapshot") from None

    def remove(self, key: str) -> None:
        try:
            super().remove(key)
        except Exception as exc:
            raise wrap(exc, "failed to remove") from None


@dataclass
class Config:
    """[plugins."io.containerd.snapshotter.v1.overlayfs"]."""

    # where the snapshots live; empty: the plugin's own root directory
    root_path: str = ""
    # report each snapshot's layer directory in the label
    # containerd.io/snapshot/overlay.upperdir (Stat, Update, Walk)
    upperdir_label: bool = False


async def init(ic: InitContext) -> OverlaySnapshotter:
    import asyncio

    root = ic.config.root_path if ic.config and ic.config.root_path else ic.root
    ic.meta.platforms.append(platforms.default_string())
    try:
        await asyncio.to_thread(check_supported, root)
    except OSError as exc:
        raise SkipPlugin(f"overlayfs unable to be used on {root}: {exc}") from None
    ic.meta.exports["root"] = root
    return await asyncio.to_thread(OverlaySnapshotter, root, ic.config.upperdir_label)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.SNAPSHOT, id="overlayfs", config=Config, init=init)]
