"""`namespaces create|label|ls|rm`, as ctr has them."""

from __future__ import annotations

import argparse
import sys

from pycontainerd.client.client import Client
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import errdefs

from .common import CommandError, _labels


def cmd_ns_create(client: Client, args: argparse.Namespace) -> int:
    name, labels = _labels(args.args)
    if not name:
        raise CommandError("please specify a namespace")
    client.namespace_create(name, labels)
    return 0


def cmd_ns_label(client: Client, args: argparse.Namespace) -> int:
    name, labels = _labels(args.args)
    if not name:
        raise CommandError("please specify a namespace")
    for k, v in labels.items():
        client.namespace_set_label(name, k, v)
    return 0


def cmd_ns_ls(client: Client, args: argparse.Namespace) -> int:
    names = client.namespace_list()
    if args.quiet:
        for n in names:
            print(n)
        return 0
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    w.write("NAME\tLABELS\t\n")
    for n in names:
        labels = client.namespace_labels(n)
        joined = ",".join(sorted(f"{k}={v}" for k, v in labels.items()))
        w.write(f"{n}\t{joined}\t\n")
    w.flush()
    return 0


def cmd_ns_rm(client: Client, args: argparse.Namespace) -> int:
    first_error = None
    for target in args.names:
        try:
            client.namespace_delete(target)
        except errdefs.NotFound:
            pass
        except errdefs.ContainerdError as exc:
            print(f'level=error msg="unable to delete {target}" error="{exc}"', file=sys.stderr)
            first_error = first_error or f"unable to delete {target}: {exc}"
            continue
        print(target)
    if first_error:
        raise CommandError(first_error)
    return 0


def register(sub) -> None:
    ns = sub.add_parser("namespaces", aliases=["namespace", "ns"], help="manage namespaces")
    nsub = ns.add_subparsers(dest="subcommand", required=True)
    c = nsub.add_parser("create", aliases=["c"], help="create a new namespace")
    c.add_argument("args", nargs="*", metavar="<name> [<key>=<value>]")
    c.set_defaults(fn=cmd_ns_create)
    lb = nsub.add_parser("label", help="set and clear labels for a namespace")
    lb.add_argument("args", nargs="*", metavar="<name> [<key>=<value>, ...]")
    lb.set_defaults(fn=cmd_ns_label)
    nls = nsub.add_parser("list", aliases=["ls"], help="list namespaces")
    nls.add_argument("-q", "--quiet", action="store_true", help="print only the namespace name")
    nls.set_defaults(fn=cmd_ns_ls)
    rm = nsub.add_parser("remove", aliases=["rm"], help="remove one or more namespaces")
    rm.add_argument("-c", "--cgroup", action="store_true", help="delete the namespace's cgroup")
    rm.add_argument("names", nargs="*", metavar="<name>")
    rm.set_defaults(fn=cmd_ns_rm)
