"""A runnable image for the container tests, built from Debian's
busybox-static (/bin/busybox): one gzip layer holding the binary and the
applet links a shell session needs, an image config with containerd's
usual PATH and `/bin/sh` as its command, written as an OCI image layout
tar that `ctr images import` reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

BUSYBOX = "/bin/busybox"
NAME = "docker.io/library/busybox-static:test"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
APPLETS = ("sh", "echo", "sleep", "cat", "id", "env", "pwd", "true", "false", "ls", "ps", "kill", "mount")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar() -> bytes:
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} is not installed (Debian's busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            t.addfile(info)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        t.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            t.addfile(info)
        for name, text in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(text), 0o644, 0
            t.addfile(info, io.BytesIO(text))
    return buf.getvalue()


def write_busybox_layout(path: str, name: str = NAME) -> str:
    """Write the image as an OCI layout tar at `path`; returns `path`."""
    layer_tar = _layer_tar()
    layer = gzip.compress(layer_tar, compresslevel=1, mtime=0)
    config = json.dumps({
        "architecture": ARCH, "os": "linux",
        "config": {"Env": [f"PATH={PATH}"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(layer),
                    "size": len(layer)}],
    }).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MANIFEST, "digest": _digest(manifest), "size": len(manifest),
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
                       "platform": {"architecture": ARCH, "os": "linux"}}],
    }).encode()
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    members.update({"blobs/sha256/" + _digest(b)[7:]: b for b in (manifest, config, layer)})
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as t:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    return path
