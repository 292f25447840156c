"""What a client checks before it waits for a daemon: that the UNIX socket
it was given is there and someone listens on it.

gRPC retries a failed connect until the dial timeout (10 s by default), so
a mistyped `--address`, a path that is a directory, or a socket file left
behind by a stopped daemon would each cost the user that long and end in an
unhelpful "context deadline exceeded". One plain connect(2) tells these
apart at once. A socket that accepts but never answers gRPC (a wedged or
foreign server) passes this check and still meets the dial timeout.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.socketpath import kind_of, unix_path


class DialError(errdefs.Unavailable):
    """The daemon cannot be reached; the message says why, ctr-style:
    `failed to dial "<address>": <reason>`."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"failed to dial {errdefs.go_quote(address)}: {reason}")

    def __str__(self) -> str:
        return self.message  # the reason already says it all; no sentinel


def check_socket(address: str) -> None:
    """Raise DialError when `address` names a UNIX socket path that cannot
    be a live daemon: missing, not a socket, refused, or not permitted."""
    path = unix_path(address)
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DialError(address, "the path does not exist (is the daemon running?)") from None
    except PermissionError:
        raise DialError(address, "permission denied (cannot reach the socket's directory)") from None
    except OSError as exc:
        raise DialError(address, exc.strerror or str(exc)) from None
    if not stat.S_ISSOCK(mode):
        raise DialError(address, f"not a socket ({kind_of(mode)})")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog must not block us: gRPC then waits with its timeout
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        raise DialError(address, "connection refused (a socket file with nobody listening: "
                                 "is the daemon running?)") from None
    except PermissionError:
        raise DialError(address, "permission denied (no write permission on the socket)") from None
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EINPROGRESS):
            raise DialError(address, (exc.strerror or str(exc)).lower()) from None
    finally:
        probe.close()
