"""Leases (containerd's leases package): what a lease is, the resources
it holds, the labels that shape it, and how the API carries one."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field

# the request metadata key that names the caller's lease (containerd's
# leases.GRPCHeader): what a client creates or prepares under it is held
# by that lease until it is deleted
GRPC_HEADER = "containerd-lease"

LABEL_EXPIRE = "containerd.io/gc.expire"  # RFC 3339: the lease ends then
LABEL_FLAT = "containerd.io/gc.flat"  # hold only what is named, not what it references


@dataclass
class Lease:
    """A lease: its id, creation time and labels."""

    id: str
    created_at: int = 0  # nanoseconds since the epoch, UTC
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    """A resource a lease holds: its id and type (content, snapshots/<name>, ingests)."""

    id: str
    type: str


def random_id() -> str:
    """containerd's WithRandomID: the clock's nanoseconds within the second,
    a dash, and three random bytes in URL-safe base64."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"
