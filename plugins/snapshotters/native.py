"""io.containerd.snapshotter.v1.native: snapshots as plain directories.

Works on any filesystem: an active snapshot with a parent starts as a full
copy of the parent's directory (`cp -a`, which keeps owners, modes, times,
xattrs, hard links and device nodes), and every mount is a bind mount. A
view of a committed snapshot binds the parent read-only without copying,
as containerd's native snapshotter does.

Layout under the plugin root: `metadata.db` and `snapshots/<id>`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterable

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import platforms
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_VIEW, Mount, Usage

from .base import LocalSnapshotter, disk_usage, wrap
from .storage import Snapshot


class NativeSnapshotter(LocalSnapshotter):
    def mounts_of(self, s: Snapshot) -> list[Mount]:
        ro = "ro" if s.kind == KIND_VIEW else "rw"
        if not s.parent_ids or s.kind == KIND_ACTIVE:
            source = self.snapshot_dir(s.id)
        else:
            source = self.snapshot_dir(s.parent_ids[0])
        return [Mount(type="bind", source=source, options=[ro, "rbind"])]

    def _create(self, kind: int, key: str, parent: str, labels: dict[str, str] | None) -> list[Mount]:
        td = ""
        try:
            with self.ms.transaction(True) as tx:
                if kind == KIND_ACTIVE or not parent:
                    td = tempfile.mkdtemp(prefix="new-", dir=os.path.join(self.root, "snapshots"))
                    os.chmod(td, 0o755)
                s = tx.create_snapshot(kind, key, parent, labels)
                if td:
                    if s.parent_ids:
                        src = self.snapshot_dir(s.parent_ids[0])
                        r = subprocess.run(["cp", "-a", "--reflink=auto", src + "/.", td + "/"],
                                           capture_output=True, text=True)
                        if r.returncode:
                            raise OSError(f"copying {src}: {r.stderr.strip()}")
                    os.rename(td, self.snapshot_dir(s.id))
                    td = ""
        finally:
            if td:
                shutil.rmtree(td, ignore_errors=True)
        return self.mounts_of(s)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        with self.ms.transaction(True) as tx:
            sid, _, _ = tx.get_info(key)
            usage = disk_usage(self.snapshot_dir(sid)) if os.path.isdir(self.snapshot_dir(sid)) else Usage()
            try:
                tx.commit_active(key, name, usage, labels)
            except Exception as exc:
                raise wrap(exc, "failed to commit snapshot") from None


@dataclass
class Config:
    """[plugins."io.containerd.snapshotter.v1.native"]."""

    # where the snapshots live; empty: the plugin's own root directory
    root_path: str = ""


async def init(ic: InitContext) -> NativeSnapshotter:
    import asyncio

    root = ic.config.root_path or ic.root
    ic.meta.platforms.append(platforms.default_string())
    ic.meta.exports["root"] = root
    return await asyncio.to_thread(NativeSnapshotter, root)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.SNAPSHOT, id="native", config=Config, init=init)]
