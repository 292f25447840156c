"""`version`: client and server versions, as ctr prints them."""

from __future__ import annotations

import argparse
import platform
import sys

from pycontainerd.client.client import Client
from pycontainerd.core.version import VERSION, revision


def cmd_version(client: Client, args: argparse.Namespace) -> int:
    print("Client:")
    print("  Version: ", VERSION)
    print("  Revision:", revision())
    print("  Python version:", platform.python_version())
    print("")
    version, rev = client.version()
    print("Server:")
    print("  Version: ", version)
    print("  Revision:", rev)
    print("  UUID:", client.server().uuid)
    if version != VERSION:
        print("WARNING: version mismatch", file=sys.stderr)
    return 0


def register(sub) -> None:
    sub.add_parser("version", help="print the client and server versions").set_defaults(fn=cmd_version)
