"""What a task half made by a shim leaves when its daemon died during
Create: runc's create was cut short before runc recorded the container,
so neither `runc delete` nor the shim's `delete` action knows the cgroups
it had made already. They are the spec's cgroupsPath (cgroupfs driver)
under every cgroup mount, and only empty ones are removed: the kernel
refuses to remove a cgroup that still holds a process or a child.
"""

from __future__ import annotations

import json
import os

import structlog

log = structlog.get_logger(__name__)


def cgroups_path(spec: bytes) -> str:
    """The OCI spec's linux.cgroupsPath ("" when absent or unreadable)."""
    try:
        doc = json.loads(spec or b"{}")
        path = ((doc.get("linux") or {}) if isinstance(doc, dict) else {}).get("cgroupsPath", "")
    except (ValueError, AttributeError):
        return ""
    return path if isinstance(path, str) else ""


def remove_empty_cgroups(path: str) -> list[str]:
    """Blocking: rmdir `path` under every cgroup mount; what went."""
    from pycontainerd.pkg.cgroups import paths

    if ":" in path:  # the systemd driver's slice:prefix:name: systemd removes its scopes
        return []
    relative = os.path.normpath("/" + path).lstrip("/") if path else ""
    if not relative:
        return []
    removed = []
    for mount in paths.mounts():
        directory = os.path.join(mount.mountpoint, relative)
        try:
            os.rmdir(directory)
        except OSError:  # not there, or not empty: not ours to take
            continue
        removed.append(directory)
    if removed:
        log.info("removed the cgroups of a task never created", cgroups_path=path, count=len(removed))
    return removed
