"""Fetching an image from a registry into a containerd content store (the
Content service of pycontainerd or a real containerd), as containerd's
client.Fetch walks it: the root, then each manifest's config and layers,
every blob written under the caller's lease with containerd's ingest ref
(`index-`, `manifest-`, `config-`, `layer-` + digest) and the
`containerd.io/distribution.source.<registry host>` label (distribution.py;
a blob already stored gets this repository added to it), and each parent
labelled with its children's `containerd.io/gc.ref.content.*` so that,
once an image record points at the root, GC keeps the whole tree.

Blobs already in the store are not fetched again. A blob whose bytes do not
match its descriptor is never committed (the registry client raises before
the last write; the store checks the digest again at commit).
"""

from __future__ import annotations

from typing import Iterator

from pycontainerd.pkg import errdefs, platforms, reference
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifests
from pycontainerd.pkg.oci.descriptor import Descriptor

from .distribution import source_labels
from .registry import Registry


def ref_key(desc: Descriptor) -> str:
    """containerd's remotes.MakeRefKey: the ingest ref of a descriptor."""
    mt = desc.media_type
    if mediatypes.is_manifest(mt):
        return "manifest-" + desc.digest
    if mediatypes.is_index(mt):
        return "index-" + desc.digest
    if mediatypes.is_layer(mt):
        return "layer-" + desc.digest
    if mediatypes.is_config(mt):
        return "config-" + desc.digest
    return "unknown-" + desc.digest


def child_gc_label(desc: Descriptor) -> str:
    """containerd's ChildGCLabels: the label prefix a parent uses for `desc`
    (a trailing `.` takes the child's position among its kind)."""
    if mediatypes.is_config(desc.media_type):
        return "containerd.io/gc.ref.content.config"
    if mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(desc.media_type):
        return "containerd.io/gc.ref.content.m."
    if mediatypes.is_layer(desc.media_type):
        return "containerd.io/gc.ref.content.l."
    return "containerd.io/gc.ref.content."


def children_labels(children: list[Descriptor]) -> dict[str, str]:
    """containerd's SetChildrenMappedLabels: one label per child; a prefix
    ending in `.` always gets an index, others from the second use on."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}
    for ch in children:
        key = child_gc_label(ch)
        idx = counts.get(key, 0)
        counts[key] = idx + 1
        if idx > 0 or key.endswith("."):
            key = f"{key}{idx}"
        labels[key] = ch.digest
    return labels


class _IterReader:
    """A read()-able view of a chunk iterator (what write_blob consumes)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def fetch_into(content, registry: Registry, ref_text: str,
               matcher: platforms.MatchComparer | None = None) -> tuple[str, Descriptor, list[Descriptor]]:
    """Fetch `ref_text` into `content` (a ContentClient, normally bound to
    a lease). `matcher` picks the manifests of an index (all of them when
    None, as `ctr content fetch` without `--platform`). Returns the
    normalised name, the root descriptor and every descriptor stored, in
    walk order."""
    name, root = registry.resolve(ref_text)
    ref = reference.parse_docker_ref(name)
    stored: list[Descriptor] = []

    def ensure(desc: Descriptor) -> None:
        try:
            info = content.info(desc.digest)
        except errdefs.NotFound:
            reader = _IterReader(registry.fetch(name, desc))
            content.write_blob(ref_key(desc), reader, desc.size, desc.digest, labels=source_labels(ref, {}))
        else:  # already here: this repository joins its sources
            label = source_labels(ref, info.labels)
            if label and any(info.labels.get(k) != v for k, v in label.items()):
                content.update(desc.digest, label, [f"labels.{k}" for k in label])
        stored.append(desc)

    def read(desc: Descriptor) -> bytes:
        data = b"".join(content.read(desc.digest))
        if len(data) != desc.size:
            raise errdefs.FailedPrecondition(f"{desc.digest}: stored size {len(data)}, expected {desc.size}")
        return data

    def walk(desc: Descriptor) -> None:
        ensure(desc)
        if mediatypes.is_index(desc.media_type):
            index = parse_index(read(desc), desc.media_type)
            chosen = index.manifests if matcher is None else select_manifests(index, matcher)
            children: list[Descriptor] = [Descriptor(d.media_type, d.digest, d.size, d.annotations) for d in chosen]
        elif mediatypes.is_manifest(desc.media_type):
            m = parse_manifest(read(desc), desc.media_type)
            children = [m.config, *m.layers]
        else:
            return
        if children:
            labels = children_labels(children)
            content.update(desc.digest, labels, [f"labels.{k}" for k in labels])
        for ch in children:
            walk(ch)

    walk(root)
    return name, root, stored
