"""ttrpc's framing: every message is a 10-byte header and a body.

    length    uint32, big endian: the body's length (the header not counted)
    stream id uint32, big endian: which call the message belongs to
    type      byte: 1 request, 2 response (the only two this ttrpc has)
    flags     byte: reserved, 0

Clients number their streams with odd ids, increasing. A body longer than
MAX_MESSAGE (4 MiB) is not read: the receiver skips it and the call fails
with RESOURCE_EXHAUSTED, as ttrpc's channel does.

A server reads with a `Budget`: what bodies larger than SMALL_MESSAGE may
hold in memory at once, across all its connections. Each large body is
charged chunk by chunk as its bytes arrive (a peer that announces 4 MiB and
sends one byte holds one chunk); when the budget is spent the rest of that
body is skipped and the call fails with RESOURCE_EXHAUSTED (`Busy`). Without
it, every connection could park an almost complete 4 MiB message, and a
thousand connections would hold 4 GiB (measured: 200 such connections took
the daemon from 53 MiB to 874 MiB). Go's ttrpc has no such bound; ours only
refuses large messages while the server is that loaded, small ones always pass.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HEADER_LENGTH = 10
MAX_MESSAGE = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2

_HEADER = struct.Struct(">IIBB")
_DISCARD_CHUNK = 64 << 10
SMALL_MESSAGE = 64 << 10  # bodies up to this size are read whole, uncharged
SERVER_BUDGET = 64 << 20  # large bodies buffered at once by one server


@dataclass(frozen=True)
class Header:
    length: int
    stream_id: int
    type: int
    flags: int = 0


class Oversized(Exception):
    """A message whose body is longer than MAX_MESSAGE (already skipped)."""

    def __init__(self, header: Header):
        self.header = header
        super().__init__(oversize_message(header.length))


class Busy(Exception):
    """A large message the server had no budget left to buffer (already
    skipped); the stream stays usable."""

    def __init__(self, header: Header):
        self.header = header
        super().__init__(f"message length {header.length}: the server is buffering too many large messages, "
                         "retry later")


class Budget:
    """Bytes of large message bodies a server may hold at once."""

    def __init__(self, limit: int = SERVER_BUDGET):
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def oversize_message(length: int) -> str:
    """ttrpc's wording for a message past the limit."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE}"


def encode(stream_id: int, type_: int, body: bytes, flags: int = 0) -> bytes:
    """Header and body as one buffer (written in one call, so concurrent
    writers on one connection never interleave)."""
    return _HEADER.pack(len(body), stream_id, type_, flags) + body


def decode_header(data: bytes) -> Header:
    length, stream_id, type_, flags = _HEADER.unpack(data)
    return Header(length, stream_id, type_, flags)


async def read_message(reader: asyncio.StreamReader, budget: Budget | None = None) -> tuple[Header, bytes]:
    """The next message. Raises asyncio.IncompleteReadError at end of stream
    (mid-message included) and Oversized, after skipping the body, for a
    message past the limit (the stream stays usable).

    With a `budget`, a body longer than SMALL_MESSAGE is charged to it as it
    arrives; it stays charged once returned (the caller gives `charge(header)`
    back when done with it), and a body the budget cannot hold is skipped
    and raises Busy."""
    header = decode_header(await reader.readexactly(HEADER_LENGTH))
    if header.length > MAX_MESSAGE:
        await _discard(reader, header.length)
        raise Oversized(header)
    if budget is None or header.length <= SMALL_MESSAGE:
        return header, await reader.readexactly(header.length)
    parts: list[bytes] = []
    taken = 0
    try:
        while taken < header.length:
            n = min(_DISCARD_CHUNK, header.length - taken)
            if not budget.take(n):
                parts.clear()
                await _discard(reader, header.length - taken)
                raise Busy(header)
            taken += n
            parts.append(await reader.readexactly(n))
    except BaseException:
        budget.give(taken)
        raise
    return header, b"".join(parts)


def charge(header: Header) -> int:
    """What a message read with a budget holds of it until given back."""
    return header.length if header.length > SMALL_MESSAGE else 0


async def _discard(reader: asyncio.StreamReader, left: int) -> None:
    while left:
        chunk = await reader.read(min(left, _DISCARD_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(chunk)
