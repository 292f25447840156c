"""systemd's readiness protocol (sd_notify), as containerd speaks it.

Under a unit with `Type=notify`, systemd passes a datagram socket in
$NOTIFY_SOCKET and waits for `READY=1` before it counts the service as
started (and before units ordered after it start). containerd sends READY=1
once its sockets serve and STOPPING=1 when it begins to stop; so do we.
Outside systemd the variable is unset and this does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; False when there is
    none. A path starting with '@' is in the abstract namespace."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(address)
        s.sendall(state.encode())
    return True
