"""The OCI content descriptor: what a differ's Apply and Diff return, and
what images, manifests and the client's diff flow pass around."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Descriptor:
    """An OCI descriptor: media type, digest, size and annotations."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
