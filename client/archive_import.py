"""Importing an image archive into a content store and image records, as
containerd's client.Import and images/archive.ImportIndex do it.

Two archive shapes are read, in one pass over the tar:
- an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`):
  `index.json` itself becomes the root;
- a `docker save` tar (`manifest.json` listing each image's config, layer
  files and RepoTags): a Docker schema 2 manifest is written for each image
  and an index is made of them, each entry named by the
  `io.containerd.image.name` and `org.opencontainers.image.ref.name`
  annotations, as containerd's importer does.

Every regular file is written to the content store as it streams past
(ingest ref `tar-<name>`; a `blobs/<alg>/<hex>` entry with its digest
expected, so a blob the store has is not sent again, only leased), under one lease held for the whole import, so
nothing is collectable half-way and nothing outlives a failure: on any
error the lease is removed with a synchronous collection, and no image
record has been written yet. Then the index is walked (manifests for the
chosen platforms), each parent labelled with its children's
`containerd.io/gc.ref.content.*`, and one image record made per name.

Stricter than containerd on purpose: a tar entry with an absolute or `..`
name is refused, a `blobs/<alg>/<hex>` file whose bytes do not hash to its
name is refused, and every blob the walk reaches must be in the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Callable

from pycontainerd.pkg import errdefs, platforms, reference
from pycontainerd.pkg.digest import digest_error
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifests
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.leases import LABEL_EXPIRE, random_id
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .errors import ClientError
from .images import Images
from .leases import Leases
from .remotes.fetch import children_labels

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_VERSION = "1.0.0"
# containerd reads oci-layout and manifest.json through a 20 MiB limit
JSON_LIMIT = 20 << 20


class ArchiveError(errdefs.InvalidArgument):
    """An archive that cannot be imported; the message says which entry
    (worded alone, as containerd's importer words its plain errors)."""

    sentinel = ""


@dataclass
class ImportOptions:
    """ctr's import flags, as client.Import options."""

    ref_translator: Callable[[str], str] | None = None   # org.opencontainers.image.ref.name -> name
    digest_ref: Callable[[str], str] | None = None       # --digests: manifest digest -> name
    index_name: str = ""
    all_platforms: bool = False
    matcher: platforms.MatchComparer = field(default_factory=platforms.default)


# -- naming rules (images/archive/reference.go) ------------------------------------

def _is_image_prefix(name: str, prefix: str) -> bool:
    if not name.startswith(prefix):
        return False
    return len(name) == len(prefix) or name[len(prefix)] in "/:@"


def add_ref_prefix(image: str) -> Callable[[str], str]:
    """A bare ref name (no `/`, `:` or `@`) becomes `image:name`; others stay."""
    return lambda ref: ref if any(c in ref for c in "/:@") else f"{image}:{ref}"


def filter_ref_prefix(image: str) -> Callable[[str], str]:
    """As add_ref_prefix, but a full name outside `image` is dropped ("")."""
    def translate(ref: str) -> str:
        if any(c in ref for c in "/:@"):
            return ref if _is_image_prefix(ref, image) else ""
        return f"{image}:{ref}"
    return translate


def digest_translator(prefix: str) -> Callable[[str], str]:
    return lambda dgst: f"{prefix}@{dgst}"


def oci_reference_name(name: str) -> str:
    """The object part of a full name (`docker.io/library/a:1` -> `1`), or
    the name itself when it has no host part, as containerd's
    ociReferenceName does through reference.Parse."""
    host, sep, rest = name.partition("/")
    port = host.partition(":")[2]
    if not sep or not host or (port and not port.isdigit()):
        return name
    for i, c in enumerate(rest):
        if c in ":@":
            return rest[i + 1:] if c == ":" else rest[i:]
    return ""


def normalize_reference(ref: str) -> str:
    try:
        return str(reference.parse_docker_ref(ref))
    except reference.ReferenceError as exc:
        raise ArchiveError(f"normalize image ref {errdefs.quote(ref)}: {exc}") from None


# -- reading the tar -----------------------------------------------------------------

def _clean_name(name: str) -> str:
    """The entry's name as containerd keys it (path.Clean), refusing names
    that climb out of the archive."""
    if name.startswith("/") or ".." in name.split("/"):
        raise ArchiveError(f"invalid entry name in archive: {errdefs.quote(name)}")
    return posixpath.normpath(name)


class _HashingReader:
    """An entry's bytes as write_blob reads them, hashed on the way. The
    first bytes are read at once (they tell a gzip layer) and handed out
    first."""

    def __init__(self, f: BinaryIO):
        self.f, self.h = f, hashlib.sha256()
        self.head = self._pending = f.read(4)
        self.h.update(self.head)
        self.count = len(self.head)

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            out = self._pending if n < 0 else self._pending[:n]
            self._pending = self._pending[len(out):]
            return out
        data = self.f.read(n)
        self.h.update(data)
        self.count += len(data)
        return data


def _named_digest(name: str) -> str:
    """The digest a `blobs/<alg>/<hex>` entry claims by its name ("" for
    other entries, and for names that are no valid digest)."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return ""
    dgst = f"{parts[1]}:{parts[2]}"
    return dgst if digest_error(dgst) is None else ""


def _ingest_blob(content: ContentClient, name: str, f: BinaryIO, size: int) -> _Blob:
    """One entry into the store. A blob named by its digest is sent with
    that digest expected, so one already in the store is not sent again
    and one whose bytes differ is never committed."""
    expected = _named_digest(name)
    reader = _HashingReader(f)
    mismatch = ArchiveError(f"blob {errdefs.quote(name)} does not match its digest")
    try:
        written = content.write_blob(f"tar-{name}", reader, size, expected)
    except (errdefs.ContainerdError, ClientError):
        if expected and reader.count == size and "sha256:" + reader.h.hexdigest() != expected:
            raise mismatch from None
        raise
    if expected and not written:
        return _Blob(expected, size, reader.head[:2] == b"\x1f\x8b")  # in the store already
    dgst = "sha256:" + reader.h.hexdigest()
    if name.startswith("blobs/") and name.count("/") == 2 and dgst != expected:
        raise mismatch
    return _Blob(dgst, size, reader.head[:2] == b"\x1f\x8b")


def _read_json(f: BinaryIO, name: str):
    data = f.read(JSON_LIMIT + 1)
    if len(data) > JSON_LIMIT:
        raise ArchiveError(f"{name}: larger than {JSON_LIMIT} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError(f"{name}: not valid JSON") from None


@dataclass
class _Blob:
    digest: str
    size: int
    gzip: bool


def _ingest(content: ContentClient, tar: tarfile.TarFile) -> tuple[dict, list | None, dict[str, _Blob]]:
    """Every regular file into the store; returns oci-layout, manifest.json
    and the blobs by cleaned name (symlinks resolved as containerd does)."""
    layout: dict = {}
    docker: list | None = None
    blobs: dict[str, _Blob] = {}
    symlinks: dict[str, str] = {}
    for member in tar:
        name = _clean_name(member.name)
        if member.issym():
            symlinks[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            continue
        if not member.isreg():
            continue
        f = tar.extractfile(member)
        if name == OCI_LAYOUT_FILE:
            layout = _read_json(f, name)
            if not isinstance(layout, dict):
                raise ArchiveError(f"{name}: not a JSON object")
        elif name == "manifest.json":
            docker = _read_json(f, name)
            if not isinstance(docker, list):
                raise ArchiveError(f"{name}: not a JSON array")
        else:
            blobs[name] = _ingest_blob(content, name, f, member.size)
    for name, target in symlinks.items():
        if target in blobs:
            blobs[name] = blobs[target]
        elif docker is not None:
            raise ArchiveError(f"no target for symlink layer from {errdefs.quote(name)} to {errdefs.quote(target)}")
    return layout, docker, blobs


def _write_json(content: ContentClient, obj: dict, media_type: str) -> Descriptor:
    data = json.dumps(obj, separators=(",", ":")).encode()
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    content.write_blob(f"manifest-{dgst}", io.BytesIO(data), len(data), dgst)
    return Descriptor(media_type, dgst, len(data))


def _desc_json(d: Descriptor) -> dict:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


def _docker_index(content: ContentClient, manifests: list, blobs: dict[str, _Blob]) -> Descriptor:
    """containerd's conversion of manifest.json: one schema 2 manifest per
    image, an OCI index listing them with their platform and names."""
    entries = []
    for i, m in enumerate(manifests):
        if not isinstance(m, dict) or not isinstance(m.get("Config"), str):
            raise ArchiveError(f"manifest.json: entry {i} has no Config")
        config = blobs.get(posixpath.normpath(m["Config"]))
        if config is None:
            raise ArchiveError(f"image config {errdefs.quote(m['Config'])} not found")
        layers = []
        for f in m.get("Layers") or []:
            blob = blobs.get(posixpath.normpath(str(f)))
            if blob is None:
                raise ArchiveError(f"failed to resolve layers: layer {errdefs.quote(str(f))} not found")
            mt = mediatypes.DOCKER_SCHEMA2_LAYER_GZIP if blob.gzip else mediatypes.DOCKER_SCHEMA2_LAYER
            layers.append(Descriptor(mt, blob.digest, blob.size))
        config_desc = Descriptor(mediatypes.DOCKER_SCHEMA2_CONFIG, config.digest, config.size)
        manifest = {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_SCHEMA2_MANIFEST,
                    "config": _desc_json(config_desc), "layers": [_desc_json(d) for d in layers]}
        desc = _desc_json(_write_json(content, manifest, mediatypes.DOCKER_SCHEMA2_MANIFEST))
        try:
            cfg = json.loads(b"".join(content.read(config.digest)))
        except (ValueError, UnicodeDecodeError):
            raise ArchiveError(f"image config {errdefs.quote(m['Config'])} is not valid JSON") from None
        if isinstance(cfg, dict) and cfg.get("os"):
            p = platforms.normalize(platforms.Platform(str(cfg.get("os", "")), str(cfg.get("architecture", ""))))
            desc["platform"] = {"architecture": p.architecture, "os": p.os}
            if p.variant:
                desc["platform"]["variant"] = p.variant
        tags = m.get("RepoTags") or []
        if not tags:
            entries.append(desc)
        for tag in tags:
            name = normalize_reference(str(tag))
            entries.append({**desc, "annotations": {ANNOTATION_IMAGE_NAME: name,
                                                   ANNOTATION_REF_NAME: oci_reference_name(name)}})
    # the platform goes after the annotations, as Go orders a descriptor's fields
    for e in entries:
        if "platform" in e:
            e["platform"] = e.pop("platform")
    return _write_json(content, {"schemaVersion": 2, "manifests": entries}, mediatypes.OCI_INDEX)


def import_index(content: ContentClient, stream: BinaryIO) -> Descriptor:
    """images/archive.ImportIndex: the archive into `content`; returns the
    index that roots it."""
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError:
        raise ArchiveError("not a tar archive") from None
    try:
        with tar:
            layout, docker, blobs = _ingest(content, tar)
    except tarfile.TarError as exc:
        raise ArchiveError(f"reading archive: {errdefs.cut(str(exc))}") from None
    if layout.get("imageLayoutVersion"):
        if layout["imageLayoutVersion"] != OCI_LAYOUT_VERSION:
            raise ArchiveError(f"unsupported OCI version {errdefs.cut(str(layout['imageLayoutVersion']))}")
        idx = blobs.get("index.json")
        if idx is None:
            raise ArchiveError(f"missing index.json in OCI layout {OCI_LAYOUT_VERSION}")
        return Descriptor(mediatypes.OCI_INDEX, idx.digest, idx.size)
    if docker is None:
        raise ArchiveError("unrecognized image format")
    return _docker_index(content, docker, blobs)


# -- the walk and the records (client.Import) --------------------------------------------

def _read(content: ContentClient, desc: Descriptor) -> bytes:
    try:
        data = b"".join(content.read(desc.digest))
    except errdefs.NotFound:
        raise errdefs.NotFound(f"content {desc.digest}: not found in the archive") from None
    return data


def _name_of(annotations: dict[str, str], translate: Callable[[str], str] | None) -> str:
    name = annotations.get(ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    name = annotations.get(ANNOTATION_REF_NAME, "")
    if name and translate is not None:
        name = translate(name)
    return name


def _walk(content: ContentClient, root: Descriptor, opts: ImportOptions) -> list[Image]:
    """Label every parent with its children, check each blob is present,
    and collect the image names the root index gives."""
    images: list[Image] = []
    if opts.index_name:
        images.append(Image(name=opts.index_name, target=root))
    todo = [root]
    while todo:
        desc = todo.pop()
        if mediatypes.is_index(desc.media_type):
            index = parse_index(_read(content, desc), desc.media_type)
            if desc.digest == root.digest:
                for m in index.manifests:
                    target = Descriptor(m.media_type, m.digest, m.size, dict(m.annotations))
                    name = _name_of(m.annotations, opts.ref_translator)
                    if name:
                        images.append(Image(name=name, target=target))
                    if opts.digest_ref is not None:
                        images.append(Image(name=opts.digest_ref(m.digest), target=target))
            chosen = index.manifests if opts.all_platforms else select_manifests(index, opts.matcher)
            # keep the index's own order, as containerd's FilterPlatforms does
            keep = {id(d) for d in chosen}
            children = [Descriptor(d.media_type, d.digest, d.size) for d in index.manifests if id(d) in keep]
        elif mediatypes.is_manifest(desc.media_type):
            m = parse_manifest(_read(content, desc), desc.media_type)
            children = [m.config, *m.layers]
        else:
            content.info(desc.digest)  # present?
            continue
        if children:
            labels = children_labels(children)
            content.update(desc.digest, labels, [f"labels.{k}" for k in labels])
        todo.extend(reversed(children))
    return images


def import_archive(client, stream: BinaryIO, opts: ImportOptions) -> list[Image]:
    """client.Import: the archive under a fresh lease, then the image
    records (updated when the name exists, else created). On failure the
    lease goes with a synchronous collection and nothing is recorded."""
    leases = Leases(client)
    expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lease = leases.create(random_id(), {LABEL_EXPIRE: expire}).id
    ok = False
    try:
        content = ContentClient(client, lease)
        root = import_index(content, stream)
        images = _walk(content, root, opts)
        store = Images(client)
        out = []
        for image in images:
            try:
                out.append(store.update(image, "target"))
            except errdefs.NotFound:
                out.append(store.create(image))
        ok = True
        return out
    finally:
        try:
            leases.delete(lease, sync=not ok)
        except errdefs.ContainerdError:
            pass
