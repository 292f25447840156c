"""Pull = fetch + unpack as one pipeline, against any containerd API
(pycontainerd or a real containerd).

containerd's ctr fetches the whole image, then unpacks it layer after
layer. Here both overlap:

- the root (index or manifest), the chosen manifests and their configs are
  fetched first (small blobs), each parent labelled with its children's
  `containerd.io/gc.ref.content.*` (client/remotes/fetch.py);
- every layer not already in the content store downloads in a pool of
  `max_concurrent_downloads` threads (ctr's `--max-concurrent-downloads`;
  3 by default), bottom layer first, each blob streamed into a content
  writer and committed with its size and digest, which the registry client
  and then the store check: nothing unverified is ever committed;
- meanwhile the unpacker (client/image_unpack.py, the one pull and import
  share) applies layer i through the Diff service into a snapshot prepared
  on layer i-1's chain ID as soon as layer i's blob is committed; a chain
  ID already committed is skipped without waiting;
- only when every blob is in and every wanted platform unpacked is the
  image record created (or replaced), so a failed pull leaves no record.

Everything runs under one lease (the caller's TemporaryLease): until the
image record exists, nothing written can be collected, and after a failure
whatever was written is held by that lease only and goes with it. The
first failure anywhere stops the rest: downloads not started are dropped,
running ones stop at their next chunk, the unpacker stops before its next
layer (an extraction snapshot it was filling is removed).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pycontainerd.pkg import errdefs, platforms, reference
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifests
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .image_unpack import manifest_for, unpack_manifest
from .images import Images
from .pull_progress import Tracker
from .remotes.distribution import source_labels
from .remotes.fetch import children_labels, ref_key
from .remotes.registry import Registry

DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3


@dataclass
class Fetched:
    """What a pull did: the image record, every descriptor walked with
    whether it was already in the store ("exists") or written now ("done"),
    and the top chain ID unpacked for each platform asked."""

    image: Image
    statuses: list[tuple[Descriptor, str]] = field(default_factory=list)
    unpacked: list[tuple[platforms.Platform, str]] = field(default_factory=list)


class PullCancelled(errdefs.Canceled):
    """A download stopped because something else in the pull failed."""

    sentinel = ""


class _Pipeline:
    """One pull's shared state: the store, the download pool, the first
    failure."""

    def __init__(self, client: Any, registry: Registry, lease: str, tracker: Tracker, max_downloads: int):
        self.client = client
        self.registry = registry
        self.content = ContentClient(client, lease=lease)
        self.tracker = tracker
        self.pool = ThreadPoolExecutor(max_workers=max(1, max_downloads), thread_name_prefix="pull-download")
        self.downloads: dict[str, Future] = {}
        self.failed = threading.Event()
        self.statuses: dict[str, str] = {}  # digest -> "exists" | "done"
        self.walked: list[Descriptor] = []
        self.name = ""
        self.ref: reference.Reference | None = None  # the parsed name: where blobs come from

    # -- blobs -------------------------------------------------------------------------

    def _present(self, desc: Descriptor) -> bool:
        """Whether the store has `desc`; if so, this repository joins the
        blob's distribution sources (what a later push mounts from)."""
        try:
            info = self.content.info(desc.digest)
        except errdefs.NotFound:
            return False
        if not self._lease(desc):
            return False
        label = source_labels(self.ref, info.labels)
        if label and any(info.labels.get(k) != v for k, v in label.items()):
            self.content.update(desc.digest, label, [f"labels.{k}" for k in label])
        return True

    def _lease(self, desc: Descriptor) -> bool:
        """Put a blob the store has in the pull's lease, as containerd's
        fetch does: a writer opened for its digest makes the store lease it
        and answer AlreadyExists, in one transaction. Without it, a blob
        nothing else holds (an image removed a moment ago) could be
        collected before the image record names it. False when it was
        collected before this (the writer opened: fetch it after all)."""
        try:
            w = self.content.writer(ref_key(desc), desc.size, desc.digest)
        except errdefs.AlreadyExists:
            return True
        w.close()
        return False

    def _fetch_blob(self, desc: Descriptor) -> None:
        """Stream `desc` into the content store (skipped when present)."""
        key = ref_key(desc)
        if self.failed.is_set():
            raise PullCancelled("pull cancelled")
        if self._present(desc):
            self.statuses[desc.digest] = "exists"
            self.tracker.set(key, "exists", total=desc.size, offset=desc.size)
            return
        self.tracker.set(key, "downloading", total=desc.size, offset=0)
        reader = _Reader(self.registry.fetch(self.name, desc), self.failed,
                         lambda n: self.tracker.advance(key, n))
        self.content.write_blob(key, reader, desc.size, desc.digest, labels=source_labels(self.ref, {}))
        self.statuses[desc.digest] = "done"
        self.tracker.set(key, "downloaded", offset=desc.size)

    def _small(self, desc: Descriptor) -> bytes:
        self._fetch_blob(desc)
        self.tracker.set(ref_key(desc), self.statuses[desc.digest])
        data = b"".join(self.content.read(desc.digest))
        if len(data) != desc.size:
            raise errdefs.FailedPrecondition(f"{desc.digest}: stored size {len(data)}, expected {desc.size}")
        return data

    def start_layer(self, desc: Descriptor) -> None:
        if desc.digest in self.downloads:
            return
        self.tracker.set(ref_key(desc), "waiting", total=desc.size)
        fut = self.pool.submit(self._fetch_blob, desc)
        fut.add_done_callback(lambda f: _failure(f) is not None and self.failed.set())
        self.downloads[desc.digest] = fut

    def ready(self, desc: Descriptor) -> None:
        """Block until `desc` is committed; raise the pull's first failure."""
        if self.failed.is_set():
            self.raise_first()
        self.downloads[desc.digest].result()

    def raise_first(self) -> None:
        """The failure that stopped the pull (not the cancellations it caused)."""
        errors = [e for e in map(_failure, self.downloads.values()) if e is not None]
        real = [e for e in errors if not isinstance(e, PullCancelled)]
        if real or errors:
            raise (real or errors)[0]
        raise PullCancelled("pull cancelled")

    # -- the tree ------------------------------------------------------------------------

    def walk(self, desc: Descriptor, matcher: platforms.MatchComparer | None) -> None:
        """The root, indexes, manifests and configs now; layers queued."""
        self.walked.append(desc)
        if mediatypes.is_layer(desc.media_type):
            self.start_layer(desc)
            return
        if not (mediatypes.is_index(desc.media_type) or mediatypes.is_manifest(desc.media_type)):
            self._small(desc)  # a config, or something unknown: as the walk finds it
            return
        data = self._small(desc)
        if mediatypes.is_index(desc.media_type):
            index = parse_index(data, desc.media_type)
            chosen = index.manifests if matcher is None else select_manifests(index, matcher)
            children = [Descriptor(d.media_type, d.digest, d.size, d.annotations) for d in chosen]
        else:
            m = parse_manifest(data, desc.media_type)
            children = [m.config, *m.layers]
        if children:
            labels = children_labels(children)
            self.content.update(desc.digest, labels, [f"labels.{k}" for k in labels])
        for ch in children:
            self.walk(ch, matcher)

    def close(self, failed: bool) -> None:
        if failed:
            self.failed.set()
        self.pool.shutdown(wait=True, cancel_futures=failed)


def _failure(fut: Future) -> BaseException | None:
    """What a finished download raised (None while running, when it
    succeeded, or when it was dropped from the queue unstarted)."""
    if not fut.done() or fut.cancelled():
        return None
    return fut.exception()


class _Reader:
    """A read()-able view of the registry's chunk iterator that counts
    bytes for the progress display and stops when the pull has failed.
    A read joins whole network chunks (one copy) and keeps what passes
    `n` of the last one for the next read."""

    def __init__(self, chunks: Iterator[bytes], failed: threading.Event, count):
        self._chunks = chunks
        self._pending = b""
        self._failed = failed
        self._count = count

    def read(self, n: int = -1) -> bytes:
        parts = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while n < 0 or have < n:
            if self._failed.is_set():
                raise PullCancelled("pull cancelled")
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            self._count(len(chunk))
            parts.append(chunk)
            have += len(chunk)
        if 0 <= n < have:
            last = parts[-1]
            cut = len(last) - (have - n)
            parts[-1], self._pending = last[:cut], last[cut:]
        if not parts:
            return b""
        return parts[0] if len(parts) == 1 else b"".join(parts)


def pull_image(client: Any, registry: Registry, ref: str, lease: str,
               matcher: platforms.MatchComparer | None, labels: dict[str, str] | None = None, *,
               unpack: list[platforms.Platform] | Callable[[Descriptor], list[platforms.Platform]] | None = None,
               snapshotter: str = "",
               tracker: Tracker | None = None,
               max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS) -> Fetched:
    """Fetch `ref` under `lease` (the manifests `matcher` picks; all of
    them when None), unpacking each platform of `unpack` into
    `snapshotter` while layers download, then create (or replace) the
    image record. `unpack=None` fetches only (`content fetch`); a callable
    is asked for the platforms once the root is in (`--all-platforms`)."""
    tracker = tracker or Tracker()
    p = _Pipeline(client, registry, lease, tracker, max_concurrent_downloads)
    ok = False
    try:
        tracker.set(ref, "resolving")
        name, root = registry.resolve(ref)
        tracker.set(ref, "resolved")
        p.name = name
        p.ref = reference.parse_docker_ref(name)
        p.walk(root, matcher)
        if callable(unpack):
            unpack = unpack(root)
        unpacked = []
        for plat in unpack or []:
            manifest = manifest_for(p.content, root, platforms.only(plat))
            top = unpack_manifest(client, p.content, manifest, snapshotter, lease, ready=p.ready,
                                  state=lambda d, s: tracker.set(ref_key(d), s))
            unpacked.append((plat, top))
        for fut in list(p.downloads.values()):
            fut.result()
        for d in p.walked:
            if d.digest in p.downloads:
                tracker.set(ref_key(d), "done" if unpack else p.statuses[d.digest])
        ok = True
    except BaseException:
        if p.failed.is_set() or any(_failure(f) is not None for f in p.downloads.values()):
            p.close(failed=True)
            p.raise_first()
        raise
    finally:
        p.close(failed=not ok)
    image = Image(name=name, target=root, labels=dict(labels or {}))
    images = Images(client)
    try:
        image = images.create(image)
    except errdefs.AlreadyExists:
        image = images.update(image)
    seen: set[str] = set()
    statuses = []
    for d in p.walked:
        if d.digest not in seen:
            seen.add(d.digest)
            statuses.append((d, p.statuses[d.digest]))
    return Fetched(image, statuses, unpacked)


def fetch_image(client: Any, registry: Registry, ref: str, lease: str,
                matcher: platforms.MatchComparer | None, labels: dict[str, str] | None = None) -> Fetched:
    """client.Fetch: the content under `lease`, then the image record
    (created, or updated whole when the name exists)."""
    return pull_image(client, registry, ref, lease, matcher, labels)


def image_platforms(client: Any, target: Descriptor, lease: str = "") -> list[platforms.Platform]:
    """images.Platforms for `--all-platforms`: every platform the image has."""
    from .images import ContentWalk

    content = ContentClient(client, lease=lease)
    walk = ContentWalk(lambda dgst: b"".join(content.read(dgst)))
    return [platforms.parse(p) for p in walk.platforms(target)]
