"""Pull = fetch + unpack, as containerd's client does it for `ctr content
fetch` and `ctr images pull`, against any containerd API (pycontainerd or
a real containerd).

`fetch_image` fetches a reference into the content store (fetch_into)
and then creates the image record, or replaces it when the name exists,
as client.Fetch does. `unpack_image` applies each layer of one platform's
manifest onto a snapshot chain, as the client's unpacker does:

- a layer's chain ID is its diff ID (the first layer), else the sha256 of
  "<parent chain ID> <diff ID>" (the OCI image spec's ChainID);
- a layer whose chain ID is already a committed snapshot is skipped;
- otherwise a snapshot `extract-<unique> <chainID>` is prepared on the
  parent, labelled `containerd.io/snapshot.ref=<chainID>`, the layer is
  applied through the Diff service, the diff ID it reports is checked
  against the config's, and the snapshot is committed as the chain ID;
- the applied layer blob gets `containerd.io/uncompressed=<diffID>`, and
  the config `containerd.io/gc.ref.snapshot.<snapshotter>=<chainID>` so GC
  keeps the chain as long as the image holds the config.

Everything happens under one lease (gc.expire in 24 hours), deleted at
the end, as ctr's WithLease: until the image record exists, nothing
fetched or unpacked can be collected.

This round runs sequentially (fetch everything, then unpack layer by
layer); the streaming pipeline of issue 8 is not here yet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import parse_index, parse_manifest, select_manifest
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.leases import LABEL_EXPIRE
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .diff import Diff
from .images import Images
from .leases import Leases
from .remotes.fetch import fetch_into
from .remotes.registry import Registry
from .snapshots import Snapshots

LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."
MAX_JSON = 4 << 20  # manifests and configs are read whole only up to this size
PREPARE_TRIES = 3


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of every prefix of `diff_ids` (OCI image spec)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _unique_part() -> str:
    """containerd's uniquePart: the clock's nanoseconds and a little randomness."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _lease_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")


class Lease:
    """A lease expiring in 24 hours, deleted on exit (ctr's WithLease)."""

    def __init__(self, client: Any):
        self.leases = Leases(client)
        self.id = ""

    def __enter__(self) -> str:
        expire = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.id = self.leases.create(_lease_id(), {LABEL_EXPIRE: expire}).id
        return self.id

    def __exit__(self, *exc: Any) -> None:
        try:
            self.leases.delete(self.id)
        except errdefs.ContainerdError:
            pass  # it expires on its own


@dataclass
class Fetched:
    """What a fetch did: the image record, and every descriptor walked with
    whether it was already in the store ("exists") or written now ("done")."""

    image: Image
    statuses: list[tuple[Descriptor, str]] = field(default_factory=list)


def fetch_image(client: Any, registry: Registry, ref: str, lease: str,
                matcher: platforms.MatchComparer | None, labels: dict[str, str] | None = None) -> Fetched:
    """client.Fetch: the content under `lease`, then the image record
    (created, or updated whole when the name exists)."""
    content = ContentClient(client, lease=lease)
    before = {i.digest for i in content.list()}
    name, root, stored = fetch_into(content, registry, ref, matcher)
    image = Image(name=name, target=root, labels=dict(labels or {}))
    images = Images(client)
    try:
        image = images.create(image)
    except errdefs.AlreadyExists:
        image = images.update(image)
    return Fetched(image, [(d, "exists" if d.digest in before else "done") for d in stored])


def _read_json(content: ContentClient, desc: Descriptor) -> dict:
    if desc.size > MAX_JSON:
        raise errdefs.FailedPrecondition(f"{desc.digest}: larger than {MAX_JSON} bytes")
    return json.loads(b"".join(content.read(desc.digest)))


def _manifest_for(content: ContentClient, target: Descriptor, matcher: platforms.MatchComparer):
    """The manifest of `target` for the platform (images.Manifest)."""
    desc = target
    if mediatypes.is_index(desc.media_type):
        data = b"".join(content.read(desc.digest))
        desc = select_manifest(parse_index(data, desc.media_type), matcher, desc.digest)
    if not mediatypes.is_manifest(desc.media_type):
        raise errdefs.NotFound(f"unexpected media type {desc.media_type} for {desc.digest}")
    manifest = parse_manifest(b"".join(content.read(desc.digest)), desc.media_type)
    if desc is target:  # a lone manifest: its config says which platform it is
        config = _read_json(content, manifest.config)
        plat = platforms.Platform(config.get("os", ""), config.get("architecture", ""), config.get("variant", ""))
        if not matcher.match(plat):
            raise errdefs.NotFound(f"manifest {target.digest}")
    return manifest


def unpack_image(client: Any, image: Image, snapshotter: str, lease: str,
                 matcher: platforms.MatchComparer) -> str:
    """Unpack the platform's layers of `image` into `snapshotter`; returns
    the top chain ID."""
    content = ContentClient(client, lease=lease)
    manifest = _manifest_for(content, image.target, matcher)
    diff_ids = _read_json(content, manifest.config).get("rootfs", {}).get("diff_ids", [])
    layers = list(manifest.layers)
    if len(diff_ids) != len(layers):
        raise errdefs.InvalidArgument("mismatched image rootfs and manifest layers")
    sn = Snapshots(client, snapshotter, lease)
    differ = Diff(client, lease)
    chain = chain_ids(diff_ids)
    for i, layer in enumerate(layers):
        parent = chain[i - 1] if i else ""
        if _apply_layer(sn, differ, layer, diff_ids[i], chain[i], parent):
            content.update(layer.digest, {LABEL_UNCOMPRESSED: diff_ids[i]}, ["labels." + LABEL_UNCOMPRESSED])
    top = chain[-1] if chain else ""
    label = LABEL_GC_SNAPSHOT + snapshotter
    content.update(manifest.config.digest, {label: top}, ["labels." + label])
    return top


def _apply_layer(sn: Snapshots, differ: Diff, layer: Descriptor, diff_id: str, chain_id: str, parent: str) -> bool:
    """One layer as the unpacker applies it; False when the chain ID was
    already committed (nothing applied)."""
    try:
        sn.stat(chain_id)
        return False
    except errdefs.NotFound:
        pass
    labels = {LABEL_SNAPSHOT_REF: chain_id}
    key = ""
    for _ in range(PREPARE_TRIES):
        key = f"extract-{_unique_part()} {chain_id}"
        try:
            mounts = sn.prepare(key, parent, labels)
            break
        except errdefs.AlreadyExists:
            try:
                sn.stat(chain_id)
                return False  # someone else committed it meanwhile
            except errdefs.NotFound:
                continue
    else:
        raise errdefs.AlreadyExists("unable to prepare extraction snapshot")
    try:
        applied = differ.apply(layer, mounts)
        if applied.digest != diff_id:
            raise errdefs.FailedPrecondition(f"wrong diff id calculated on extraction {diff_id!r}")
        sn.commit(chain_id, key, labels)
    except errdefs.AlreadyExists:
        _remove_quietly(sn, key)
        return False
    except errdefs.ContainerdError:
        _remove_quietly(sn, key)
        raise
    return True


def _remove_quietly(sn: Snapshots, key: str) -> None:
    try:
        sn.remove(key)
    except errdefs.ContainerdError:
        pass


def image_platforms(client: Any, target: Descriptor) -> list[platforms.Platform]:
    """images.Platforms for `--all-platforms`: every platform the image has."""
    from .images import ContentWalk

    content = ContentClient(client)
    walk = ContentWalk(lambda dgst: b"".join(content.read(dgst)))
    return [platforms.parse(p) for p in walk.platforms(target)]


def progress_lines(ref: str, statuses: list[tuple[Descriptor, str]], elapsed: float,
                   keyer: Callable[[Descriptor], str]) -> list[str]:
    """ctr's fetch progress table in its last state, tab-separated rows
    (the caller aligns them as Go's tabwriter): the ref resolved, each
    descriptor done or exists, then the elapsed/total line."""
    bar = "|" + "\x1b[32m" + "+" * 38 + "\x1b[0m" + "|"
    rows = [f"{ref}:\tresolved\t{bar}\t"]
    total = 0
    for desc, state in statuses:
        rows.append(f"{keyer(desc)}:\t{state}\t{bar}\t")
        if state == "done":
            total += desc.size
    rate = total / elapsed if elapsed > 0 else 0.0
    rows.append(f"elapsed: {elapsed:<4.1f}s\ttotal: {_bytes(total):>7.6}\t({_bytes(rate)}/s)\t")
    return rows


def _bytes(n: float) -> str:
    """go-units CustomSize("%02.1f %s", n, 1024, binary units)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:02.1f} {units[i]}"


def go_duration(seconds: float) -> str:
    """Go's time.Duration String for what `done:` prints."""
    ns = int(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:g}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.6f}".rstrip("0").rstrip(".") + "ms"
    s = ns / 1e9
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    text = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{text}"
    if m:
        return f"{int(m)}m{text}"
    return text
