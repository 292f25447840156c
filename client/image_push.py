"""Push = an image's content out of a content store to a registry, as
containerd's client.Push and remotes.PushContent do it, against any
containerd API (pycontainerd or a real containerd):

- the walk starts at the descriptor to push and goes down through indexes
  (only the manifests `matcher` accepts, all without one) and manifests to
  configs and layers; each child carries its blob's
  `containerd.io/distribution.source.*` labels as annotations;
- configs and layers are pushed as the walk meets them: skipped when the
  registry has them (HEAD), mounted from another repository of the same
  registry when the source labels name one, uploaded otherwise;
  non-distributable layers are left out unless asked for;
- manifests and indexes are pushed after everything, children before the
  parents that list them, the root under the reference's tag (or its
  digest), the others under their digest, each skipped when the registry
  already has it.

Every descriptor walked is reported through `on_status(key, desc, state)`
with containerd's ingest key (`layer-<digest>`...) and ctr's states
(`waiting`, then `done` when pushed, found or mounted).
"""

from __future__ import annotations

from typing import Callable

from pycontainerd.pkg import errdefs, platforms, reference
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .remotes.distribution import PREFIX as SOURCE_PREFIX
from .remotes.distribution import mount_candidate
from .remotes.fetch import ref_key
from .remotes.registry import Registry

MAX_JSON = 4 << 20  # manifests and indexes are read whole only up to this size
StatusFn = Callable[[str, Descriptor, str], None]


class _BlobReader:
    """A read()-able view of one blob in the content store, opened afresh
    for each upload attempt."""

    def __init__(self, content: ContentClient, dgst: str):
        self._chunks = content.read(dgst)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def __enter__(self) -> "_BlobReader":
        return self

    def __exit__(self, *exc) -> None:
        close = getattr(self._chunks, "close", None)
        if close:
            close()


def _read(content: ContentClient, desc: Descriptor) -> bytes:
    if desc.size > MAX_JSON:
        raise errdefs.FailedPrecondition(f"{desc.digest}: larger than {MAX_JSON} bytes")
    return b"".join(content.read(desc.digest))


def select_platform(content: ContentClient, target: Descriptor, plat: platforms.Platform) -> Descriptor:
    """ctr push with one `--platform`: the index's first manifest for that
    platform (whose content must be here), else the target itself."""
    if not mediatypes.is_index(target.media_type):
        return target
    index = parse_index(_read(content, target), target.media_type)
    matcher = platforms.only_strict(plat)  # containerd's platforms.NewMatcher: that platform alone
    for m in index.manifests:
        if m.platform is not None and matcher.match(m.platform):
            try:
                content.info(m.digest)
            except errdefs.NotFound as exc:
                raise errdefs.NotFound(f"no matching manifest: {exc.message}") from None
            return Descriptor(m.media_type, m.digest, m.size, dict(m.annotations))
    return target


def push_image(content: ContentClient, registry: Registry, ref_text: str, root: Descriptor,
               matcher: platforms.MatchComparer | None = None, on_status: StatusFn | None = None,
               allow_non_distributable: bool = False) -> list[tuple[Descriptor, str]]:
    """Push `root` and everything under it from `content` to `ref_text`.
    Returns what happened to each descriptor, in push order: `exists` (the
    registry had it), `mounted` (linked from another repository) or
    `uploaded`."""
    ref = reference.parse_docker_ref(ref_text)
    report = on_status or (lambda key, desc, state: None)
    manifests: list[Descriptor] = []
    outcomes: list[tuple[Descriptor, str]] = []

    def annotated(children: list[Descriptor]) -> list[Descriptor]:
        out = []
        for ch in children:
            info = content.info(ch.digest)
            notes = dict(ch.annotations or {})
            notes.update({k: v for k, v in info.labels.items() if k.startswith(SOURCE_PREFIX)})
            out.append(Descriptor(ch.media_type, ch.digest, ch.size, notes))
        return out

    def walk(desc: Descriptor) -> None:
        if mediatypes.is_non_distributable(desc.media_type) and not allow_non_distributable:
            return
        report(ref_key(desc), desc, "waiting")
        if mediatypes.is_index(desc.media_type):
            index = parse_index(_read(content, desc), desc.media_type)
            chosen = index.manifests
            if matcher is not None:
                chosen = [m for m in chosen if m.platform is None or matcher.match(m.platform)]
            manifests.append(desc)
            for ch in annotated([Descriptor(m.media_type, m.digest, m.size) for m in chosen]):
                walk(ch)
        elif mediatypes.is_manifest(desc.media_type):
            m = parse_manifest(_read(content, desc), desc.media_type)
            manifests.append(desc)
            for ch in annotated([m.config, *m.layers]):
                walk(ch)
        else:
            source = mount_candidate(ref, desc.annotations or {})
            outcome = registry.push_blob(ref_text, desc, lambda: _BlobReader(content, desc.digest),
                                         mount_from=(source,) if source else ())
            outcomes.append((desc, outcome))
            report(ref_key(desc), desc, "done")

    walk(root)
    # parents after their children: the registry checks what a manifest lists
    for desc in reversed(manifests):
        tag = None if desc.digest == root.digest else desc.digest
        if registry.manifest_exists(ref_text, desc, tag):
            outcomes.append((desc, "exists"))
        else:
            registry.push_manifest(ref_text, desc, _read(content, desc), tag=tag)
            outcomes.append((desc, "uploaded"))
        report(ref_key(desc), desc, "done")
    return outcomes

