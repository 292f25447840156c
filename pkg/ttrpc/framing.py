"""ttrpc's framing: every message is a 10-byte header and a body.

    length    uint32, big endian: the body's length (the header not counted)
    stream id uint32, big endian: which call the message belongs to
    type      byte: 1 request, 2 response (the only two this ttrpc has)
    flags     byte: reserved, 0

Clients number their streams with odd ids, increasing. A body longer than
MAX_MESSAGE (4 MiB) is not read: the receiver skips it and the call fails
with RESOURCE_EXHAUSTED, as ttrpc's channel does.
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


async def read_message(reader: asyncio.StreamReader) -> tuple[Header, bytes]:
    """The next message. Raises asyncio.IncompleteReadError at end of stream
    (mid-message included) and Oversized, after skipping the body, for a
    message past the limit (the stream stays usable)."""
    header = decode_header(await reader.readexactly(HEADER_LENGTH))
    if header.length > MAX_MESSAGE:
        left = header.length
        while left:
            chunk = await reader.read(min(left, _DISCARD_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
        raise Oversized(header)
    return header, await reader.readexactly(header.length)
