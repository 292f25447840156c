"""What a UNIX socket address names on disk, for the daemon that is about
to bind it and the client that is about to dial it: the path, and, when
something other than a socket is there, the words for what it is."""

from __future__ import annotations

import stat


def unix_path(address: str) -> str | None:
    """The filesystem path of a UNIX socket address (a bare path, `unix:P`
    or `unix://P`), None for any other kind of address."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    return None if "://" in address else address


def kind_of(mode: int) -> str:
    """What a file that is not a socket is, as an error says it."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a device or other special file"
