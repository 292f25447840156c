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
from typing import Any

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
