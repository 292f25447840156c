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

from pycontainerd.pkg.defaults import DEFAULT_ADDRESS
from pycontainerd.pkg import errdefs

from .client import ADDRESS_ENV, CONNECT_TIMEOUT, DEFAULT_NAMESPACE, NAMESPACE_ENV, Client, default_address
from .commands import content, images, leases, namespaces, plugins, pprof, snapshots, version
from .commands import containers, events, oci, run, tasks
from .commands.common import CommandError, _parse_duration

# the command groups, in the order `pyctr --help` lists them
COMMANDS = (version, plugins, content, images, leases, namespaces, snapshots)
COMMANDS += (run, containers, tasks, events, oci, pprof)

ENVIRONMENT = f"""\
environment (a flag given on the command line wins):
  {ADDRESS_ENV:<23} the daemon's socket (default: {DEFAULT_ADDRESS};
  {"":<23} a real containerd listens on /run/containerd/containerd.sock)
  {NAMESPACE_ENV:<23} the namespace (default: {DEFAULT_NAMESPACE})
  {snapshots.SNAPSHOTTER_ENV:<23} the snapshotter of `pyctr snapshots` (default: {snapshots.DEFAULT_SNAPSHOTTER})
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr", description="pycontainerd's ctr: drive pycontainerd or containerd",
                                epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", "-a", default=default_address(),
                   help=f'address for containerd\'s GRPC server (default: "{DEFAULT_ADDRESS}") [${ADDRESS_ENV}]')
    p.add_argument("--namespace", "-n", default=None,
                   help=f'namespace to use with commands (default: "{DEFAULT_NAMESPACE}") [${NAMESPACE_ENV}]')
    p.add_argument("--timeout", type=_parse_duration, default=None,
                   help="total timeout for ctr commands (default: none)")
    p.add_argument("--connect-timeout", type=_parse_duration, default=CONNECT_TIMEOUT,
                   help=f"timeout for connecting to the daemon (default: {CONNECT_TIMEOUT:g}s)")
    p.add_argument("--debug", action="store_true", help="enable debug output in logs")
    sub = p.add_subparsers(dest="command", required=True)

    for group in COMMANDS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kwargs: dict[str, Any] = {
            "address": args.address, "debug": args.debug,
            # as ctr: a total timeout of 0 is none, a connect timeout of 0 the default
            "timeout": args.timeout if args.timeout and args.timeout > 0 else None,
            "connect_timeout": args.connect_timeout if args.connect_timeout > 0 else CONNECT_TIMEOUT,
        }
        if args.namespace:
            kwargs["namespace"] = args.namespace
        if getattr(args, "no_client", False):  # needs no API connection: pprof (the debug socket), oci spec
            return args.fn(None, args)
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
