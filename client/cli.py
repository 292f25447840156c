"""pyctr: ctr's commands and flags, the same output.

    pyctr [--address/-a A] [--namespace/-n N] [--timeout T] [--connect-timeout T] [--debug] COMMAND

Tables are written with a port of Go's tabwriter using ctr's own settings,
so for the same server answer the bytes match ctr's. `plugins ls --tree`
and `plugins ls --format json` are pyctr's additions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import grpc

from pycontainerd.core import errdefs
from pycontainerd.core.version import VERSION, revision

from .client import Client, PluginInfo, default_address
from .tabwriter import TabWriter, fprintln


class CommandError(Exception):
    """A failure worded by the command itself, printed as `pyctr: <msg>`."""


def _parse_duration(text: str) -> float:
    """Go-style durations as ctr takes them: 10s, 500ms, 1m, or seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}") from None


def _labels(args: list[str]) -> tuple[str, dict[str, str]]:
    """ctr's ObjectWithLabelArgs: the first arg, then key=value pairs."""
    if not args:
        return "", {}
    labels = {}
    for a in args[1:]:
        k, _, v = a.partition("=")
        labels[k] = v
    return args[0], labels


# -- version -------------------------------------------------------------------

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


# -- plugins -------------------------------------------------------------------

def _pretty_platforms(platforms: list[str]) -> str:
    return ",".join(sorted(set(platforms)))


def print_plugins_table(plugins: list[PluginInfo], out: Any) -> None:
    w = TabWriter(out, 4, 8, 4, " ", 0)
    w.write("TYPE\tID\tPLATFORMS\tSTATUS\t\n")
    for p in plugins:
        column = _pretty_platforms(p.platforms) if p.platforms else "-"
        w.write(f"{p.type}\t{p.id}\t{column}\t{p.status}\t\n")
    w.flush()


def print_plugins_detailed(plugins: list[PluginInfo], out: Any) -> None:
    w = TabWriter(out, 4, 8, 4, " ", 0)
    for i, p in enumerate(plugins):
        if i:
            fprintln(w, "\t\t\t")
        fprintln(w, "Type:\t", p.type)
        fprintln(w, "ID:\t", p.id)
        if p.requires:
            fprintln(w, "Requires:\t")
            for r in p.requires:
                fprintln(w, "\t", r)
        if p.platforms:
            fprintln(w, "Platforms:\t", _pretty_platforms(p.platforms))
        if p.exports:
            fprintln(w, "Exports:\t")
            for k in sorted(p.exports):
                fprintln(w, "\t", k, "\t", p.exports[k])
        if p.capabilities:
            fprintln(w, "Capabilities:\t", ",".join(p.capabilities))
        if p.init_err is not None:
            fprintln(w, "Error:\t")
            fprintln(w, "\t Code:\t", _code_name(p.init_err[0]))
            fprintln(w, "\t Message:\t", p.init_err[1])
    w.flush()


def _code_name(code: int) -> str:
    """Go's codes.Code String(): CamelCase names."""
    for c in grpc.StatusCode:
        if c.value[0] == code:
            name = "".join(part.capitalize() for part in c.name.split("_"))
            return {"Ok": "OK", "Cancelled": "Canceled"}.get(name, name)  # Go's spelling
    return f"Code({code})"


def plugins_tree(plugins: list[PluginInfo]) -> list[str]:
    """Each plugin under the plugins it requires (the plugins of each
    required type, or every other plugin for "*"). A plugin met again
    under another parent is shown once more, without its subtree."""
    children: dict[str, list[PluginInfo]] = {p.uri: [] for p in plugins}
    roots: list[PluginInfo] = []
    for p in plugins:
        parents = [q for q in plugins if q.uri != p.uri and any(r == "*" or r == q.type for r in p.requires)]
        for q in parents:
            children[q.uri].append(p)
        if not parents:
            roots.append(p)
    types = {p.type for p in plugins}
    lines: list[str] = []
    shown: set[str] = set()

    def label(p: PluginInfo) -> str:
        text = f"{p.uri} ({p.status})"
        missing = [r for r in p.requires if r != "*" and r not in types]
        if missing:
            text += " [no plugin for: " + ", ".join(missing) + "]"
        return text

    def walk(p: PluginInfo, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        repeat = p.uri in shown
        lines.append(prefix + branch + label(p) + (" (see above)" if repeat and children[p.uri] else ""))
        if repeat:
            return
        shown.add(p.uri)
        kids = children[p.uri]
        inner = prefix + ("" if top else ("    " if last else "│   "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def plugin_json(p: PluginInfo) -> dict[str, Any]:
    return {
        "type": p.type,
        "id": p.id,
        "requires": p.requires,
        "platforms": p.platforms,
        "exports": p.exports,
        "capabilities": p.capabilities,
        "status": p.status,
        "error": None if p.init_err is None else {"code": _code_name(p.init_err[0]), "message": p.init_err[1]},
        "init_duration_seconds": p.init_duration,
    }


def cmd_plugins_ls(client: Client, args: argparse.Namespace) -> int:
    plugins = client.plugins(args.filters)
    out = sys.stdout
    if args.quiet:
        for p in plugins:
            print(p.id)
    elif args.format == "json":
        json.dump([plugin_json(p) for p in plugins], out, indent=2)
        out.write("\n")
    elif args.tree:
        for line in plugins_tree(plugins):
            print(line)
    elif args.detailed:
        print_plugins_detailed(plugins, out)
    else:
        print_plugins_table(plugins, out)
    return 0


# -- namespaces ----------------------------------------------------------------

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


# -- the parser -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr", description="pycontainerd's ctr: drive pycontainerd or containerd")
    p.add_argument("--address", "-a", default=default_address(), help="address for containerd's GRPC server")
    p.add_argument("--namespace", "-n", default=None, help="namespace to use with commands")
    p.add_argument("--timeout", type=_parse_duration, default=None, help="total timeout for ctr commands")
    p.add_argument("--connect-timeout", type=_parse_duration, default=10.0, help="timeout for connecting")
    p.add_argument("--debug", action="store_true", help="enable debug output in logs")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("version", help="print the client and server versions").set_defaults(fn=cmd_version)

    plugins = sub.add_parser("plugins", aliases=["plugin"], help="information about plugins")
    psub = plugins.add_subparsers(dest="subcommand", required=True)
    ls = psub.add_parser("list", aliases=["ls"], help="list plugins")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the plugin ids")
    ls.add_argument("-d", "--detailed", action="store_true", help="print detailed information about each plugin")
    ls.add_argument("--tree", action="store_true", help="print the dependency graph, each plugin under what it requires")
    ls.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ls.add_argument("filters", nargs="*", help="filters, e.g. type==io.containerd.snapshotter.v1 (ORed)")
    ls.set_defaults(fn=cmd_plugins_ls)

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
