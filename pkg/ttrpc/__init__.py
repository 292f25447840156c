"""ttrpc, containerd's lightweight RPC over UNIX sockets (what shims speak),
written for asyncio: framing (framing.py), the envelope messages
(messages.py), the status edge to pkg.errdefs (status.py), a client
(client.py) and a server (server.py). A library: no plugin code."""

from .client import NAMESPACE_KEY, Client
from .server import CallContext, Server
from .status import Closed, StatusError

__all__ = ["NAMESPACE_KEY", "CallContext", "Client", "Closed", "Server", "StatusError"]
