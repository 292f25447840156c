"""Exporting images as an OCI image-layout tar, as containerd's
images/archive.Export writes it for `ctr images export`: `oci-layout`,
`index.json` listing each image's target with the
`io.containerd.image.name` and `org.opencontainers.image.ref.name`
annotations, every blob under `blobs/<alg>/<hex>`, and a Docker
`manifest.json` (familiar RepoTags) so `docker load` reads it too.

Of an index, only the manifests for the chosen platform are exported
(this machine's, strictly, unless `all_platforms`); the index itself is
written whole, as containerd does. Entries are written in name order with
no timestamps, so one export of the same images gives the same bytes.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from pycontainerd.pkg import errdefs, platforms, reference
from pycontainerd.pkg.digest import digest_error
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest
from pycontainerd.pkg.oci.descriptor import Descriptor

from .archive_import import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_LAYOUT_VERSION, oci_reference_name
from .content import ContentClient
from .images import Images


def _blob_path(dgst: str) -> str:
    err = digest_error(dgst)
    if err is not None:
        raise errdefs.InvalidArgument(err)
    alg, _, hexpart = dgst.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _desc_json(d: Descriptor, platform: dict | None = None) -> dict:
    out: dict = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations.items()))
    if platform:
        out["platform"] = platform
    return out


@dataclass
class _Records:
    """What goes in the tar: blob paths -> digests, and small files."""

    blobs: dict[str, Descriptor] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def add_blob(self, desc: Descriptor) -> None:
        self.blobs[_blob_path(desc.digest)] = desc


def _platform_json(p: platforms.Platform | None) -> dict | None:
    if p is None:
        return None
    out = {"architecture": p.architecture, "os": p.os}
    if p.os_version:
        out["os.version"] = p.os_version
    if p.variant:
        out["variant"] = p.variant
    return out


def export(client, out: BinaryIO, names: list[str], all_platforms: bool = False) -> None:
    """`ctr images export out.tar NAME...`: the images into `out`."""
    content = ContentClient(client)
    store = Images(client)
    matcher = platforms.only_strict(platforms.default_spec())
    rec = _Records()
    targets: list[Descriptor] = []
    docker: dict[str, tuple[Descriptor, list[str]]] = {}   # manifest digest -> (desc, names)
    resolved: dict[str, str] = {}                          # index digest -> its chosen manifest

    def read(desc: Descriptor) -> bytes:
        return b"".join(content.read(desc.digest))

    def manifest_tree(desc: Descriptor) -> None:
        rec.add_blob(desc)
        m = parse_manifest(read(desc), desc.media_type)
        for d in [m.config, *m.layers]:
            rec.add_blob(d)

    for name in names:
        image = store.get(name)
        target = image.target
        annotations = dict(target.annotations)
        annotations[ANNOTATION_IMAGE_NAME] = name
        annotations[ANNOTATION_REF_NAME] = oci_reference_name(name)
        target = Descriptor(target.media_type, target.digest, target.size, annotations)
        targets.append(target)
        if mediatypes.is_manifest(target.media_type):
            if target.digest not in docker:
                manifest_tree(target)
                docker[target.digest] = (target, [])
            docker[target.digest][1].append(name)
        elif mediatypes.is_index(target.media_type):
            if target.digest not in resolved:
                rec.add_blob(target)
                index = parse_index(read(target), target.media_type)
                matching = []
                for m in index.manifests:
                    if m.platform is None or matcher.match(m.platform):
                        matching.append(m)
                    elif not all_platforms:
                        continue
                    if mediatypes.is_index(m.media_type):
                        raise errdefs.InvalidArgument("only manifests may be exported")
                    manifest_tree(m)
                if matching:
                    # the preferred platform first; entries with none last
                    matching.sort(key=lambda m: (m.platform is None,
                                                 matcher.rank(m.platform) if m.platform else 0))
                    chosen = matching[0]
                    docker.setdefault(chosen.digest, (chosen, []))
                    resolved[target.digest] = chosen.digest
                else:
                    raise errdefs.NotFound("no manifest found for platform")
            docker[resolved[target.digest]][1].append(name)
        else:
            raise errdefs.InvalidArgument("only manifests may be exported")

    rec.files["oci-layout"] = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}, separators=(",", ":")).encode()
    rec.files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [_desc_json(t) for t in targets]},
                                         separators=(",", ":")).encode()
    if docker:
        entries = []
        for desc, tags in docker.values():
            m = parse_manifest(read(desc), desc.media_type)
            entries.append({"Config": _blob_path(m.config.digest),
                            "RepoTags": [_familiar(t) for t in tags] or None,
                            "Layers": [_blob_path(d.digest) for d in m.layers]})
        rec.files["manifest.json"] = json.dumps(entries, separators=(",", ":")).encode()
    _write_tar(out, content, rec)


def _familiar(name: str) -> str:
    try:
        ref = reference.parse_normalized_named(name)
    except reference.ReferenceError as exc:
        raise errdefs.InvalidArgument(f"failed to parse {errdefs.quote(name)}: {exc}") from None
    if not ref.tag and not ref.digest:
        ref = reference.with_tag(ref, "latest")
    return ref.familiar_string()


def _write_tar(out: BinaryIO, content: ContentClient, rec: _Records) -> None:
    entries: dict[str, tuple[str, object]] = {}
    for path, data in rec.files.items():
        entries[path] = ("file", data)
    for path, desc in rec.blobs.items():
        entries[path] = ("blob", desc)
    if rec.blobs:
        entries["blobs/"] = ("dir", None)
        for path in rec.blobs:
            entries[posixpath.dirname(path) + "/"] = ("dir", None)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(entries):
            kind, obj = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime, info.uname, info.gname = 0, "", ""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                info.size, info.mode = len(obj), 0o444 if path == "oci-layout" else 0o644
                tar.addfile(info, io.BytesIO(obj))
            else:
                desc = obj
                info.size, info.mode = desc.size, 0o444
                tar.addfile(info, _ChunkReader(content.read(desc.digest), desc))


class _ChunkReader:
    """read() over a blob's chunks, failing if the store's size differs."""

    def __init__(self, chunks, desc: Descriptor):
        self._chunks, self._buf, self._desc, self._seen = chunks, b"", desc, 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            self._seen += len(chunk)
            self._buf += chunk
        if self._seen > self._desc.size or (len(self._buf) < n and self._seen != self._desc.size):
            raise errdefs.FailedPrecondition(f"{self._desc.digest}: stored size differs from {self._desc.size}")
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out
