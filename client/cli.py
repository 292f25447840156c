"""pyctr: ctr's commands and flags, the same output.

    pyctr [--address/-a A] [--namespace/-n N] [--timeout T] [--connect-timeout T] [--debug] COMMAND

Tables are written with a port of Go's tabwriter using ctr's own settings,
so for the same server answer the bytes match ctr's. `plugins ls --tree`
and `plugins ls --format json` are pyctr's additions.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pycontainerd.pkg import errdefs

from .client import Client, default_address
from .commands import content, leases, namespaces, plugins, snapshots, version
from .commands.common import CommandError, _parse_duration

# the command groups, in the order `pyctr --help` lists them
COMMANDS = (version, plugins, content, leases, namespaces, snapshots)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr", description="pycontainerd's ctr: drive pycontainerd or containerd")
    p.add_argument("--address", "-a", default=default_address(), help="address for containerd's GRPC server")
    p.add_argument("--namespace", "-n", default=None, help="namespace to use with commands")
    p.add_argument("--timeout", type=_parse_duration, default=None, help="total timeout for ctr commands")
    p.add_argument("--connect-timeout", type=_parse_duration, default=10.0, help="timeout for connecting")
    p.add_argument("--debug", action="store_true", help="enable debug output in logs")
    sub = p.add_subparsers(dest="command", required=True)

    for group in COMMANDS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kwargs: dict[str, Any] = {
            "address": args.address, "timeout": args.timeout, "connect_timeout": args.connect_timeout, "debug": args.debug,
        }
        if args.namespace:
            kwargs["namespace"] = args.namespace
        with Client(**kwargs) as client:
            return args.fn(client, args)
    except (errdefs.ContainerdError, CommandError) as exc:
        print(f"pyctr: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pyctr ... | head`: stop quietly, as ctr does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
