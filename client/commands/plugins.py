"""`plugins ls`: ctr's table and detailed views, byte for byte, plus
pyctr's dependency tree and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from pycontainerd.client.client import Client, PluginInfo
from pycontainerd.client.tabwriter import TabWriter, fprintln


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
    required type, or every other plugin for "*").

    A plugin and its subtree are drawn once, under the first parent a
    depth-first walk meets it through; every other parent refers back to
    it, after its own new children, on one line per type:
    `io.containerd.grpc.v1.{introspection,leases} (see above)`. (Drawn
    under every parent instead, the gRPC plugins, which require every
    service, repeated under each service.)
    """
    children: dict[str, list[PluginInfo]] = {p.uri: [] for p in plugins}
    roots: list[PluginInfo] = []
    for p in plugins:
        parents = [q for q in plugins if q.uri != p.uri and any(r == "*" or r == q.type for r in p.requires)]
        for q in parents:
            children[q.uri].append(p)
        if not parents:
            roots.append(p)

    # where each plugin is drawn: under the parent the walk first meets it from
    home: dict[str, str] = {}

    def visit(p: PluginInfo) -> None:
        for kid in children[p.uri]:
            if kid.uri not in home:
                home[kid.uri] = p.uri
                visit(kid)

    # plugins that require nothing here start the walk; a plugin that is
    # only reachable through a cycle (a "*" requirement) starts its own
    tops: list[PluginInfo] = []
    for top in [*roots, *plugins]:
        if top.uri not in home:
            home[top.uri] = ""
            tops.append(top)
            visit(top)

    types = {p.type for p in plugins}
    lines: list[str] = []

    def label(p: PluginInfo) -> str:
        text = f"{p.uri} ({p.status})"
        missing = [r for r in p.requires if r != "*" and r not in types]
        if missing:
            text += " [no plugin for: " + ", ".join(missing) + "]"
        return text

    def draw(p: PluginInfo, prefix: str, branch: str, inner: str) -> None:
        lines.append(prefix + branch + label(p))
        drawn = [kid for kid in children[p.uri] if home[kid.uri] == p.uri]
        entries: list[PluginInfo | str] = [*drawn, *_back_references(
            [kid for kid in children[p.uri] if home[kid.uri] != p.uri])]
        for i, entry in enumerate(entries):
            last = i == len(entries) - 1
            if isinstance(entry, str):
                lines.append(prefix + inner + ("└── " if last else "├── ") + entry)
            else:
                draw(entry, prefix + inner, "└── " if last else "├── ", "    " if last else "│   ")

    for top in tops:
        draw(top, "", "", "")
    return lines


def _back_references(plugins: list[PluginInfo]) -> list[str]:
    """One `(see above)` line per type, the ids in brace form when several."""
    by_type: dict[str, list[str]] = {}
    for p in plugins:
        by_type.setdefault(p.type, []).append(p.id)
    return [f"{t}.{ids[0]} (see above)" if len(ids) == 1 else f"{t}.{{{','.join(ids)}}} (see above)"
            for t, ids in by_type.items()]


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


def register(sub) -> None:
    plugins = sub.add_parser("plugins", aliases=["plugin"], help="information about plugins")
    psub = plugins.add_subparsers(dest="subcommand", required=True)
    ls = psub.add_parser("list", aliases=["ls"], help="list plugins")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the plugin ids")
    ls.add_argument("-d", "--detailed", action="store_true", help="print detailed information about each plugin")
    ls.add_argument("--tree", action="store_true", help="print the dependency graph, each plugin under what it requires")
    ls.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ls.add_argument("filters", nargs="*", help="filters, e.g. type==io.containerd.snapshotter.v1 (ORed)")
    ls.set_defaults(fn=cmd_plugins_ls)
