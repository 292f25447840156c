"""Pull = fetch + unpack, as containerd's client does it for `ctr content
fetch` and `ctr images pull`, against any containerd API (pycontainerd or
a real containerd).

`fetch_image` fetches a reference into the content store (fetch_into)
and then creates the image record, or replaces it when the name exists,
as client.Fetch does; client/image_unpack.py then unpacks it. Both run
under one TemporaryLease (client/leases.py), so until the image record
exists nothing fetched or unpacked can be collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.oci.descriptor import Descriptor

from .content import ContentClient
from .images import Images
from .remotes.fetch import fetch_into
from .remotes.registry import Registry


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
