"""The differ contract (containerd's diff package): what a plugin of type
io.containerd.differ.v1 must have.

Concurrency: both methods are coroutines, called on the daemon's event
loop; a differ does its filesystem work (mounting, unpacking, walking) in
worker threads itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from .mount import Mount
from .oci.descriptor import Descriptor

# what the daemon checks on an io.containerd.differ.v1 instance
DIFFER_METHODS = ("apply", "compare")


class Applier(Protocol):
    async def apply(self, namespace: str, desc: Descriptor, mounts: list[Mount],
                    payloads: dict[str, Any] | None = None) -> Descriptor:
        """Unpack the layer `desc` onto the mounts; its uncompressed descriptor."""
        ...


class Comparer(Protocol):
    async def compare(self, namespace: str, lower: list[Mount], upper: list[Mount], media_type: str = "",
                      ref: str = "", labels: dict[str, str] | None = None, lease: str = "") -> Descriptor:
        """Write the changes from lower to upper as a layer into the content store."""
        ...
