"""`snapshots [--snapshotter S] prepare|view|mounts|commit|ls|tree|usage|info|label|rm`,
as ctr has them (cmd/ctr/commands/snapshots), with the same output.

The snapshotter is named as ctr names it: --snapshotter, else
$CONTAINERD_SNAPSHOTTER, else "overlayfs" (containerd's Linux default). So a
real containerd, which rejects an empty name ("snapshotter argument
missing"), and pycontainerd see the same request from pyctr as from ctr.
(ctr 1.6 never reaches its namespace-label lookup from these commands: it
resolves the name without a namespace, fails, and falls back to overlayfs.)
A client that sends no name gets pycontainerd's configured default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pycontainerd.client.client import Client
from pycontainerd.client.snapshots import Snapshots
from pycontainerd.pkg.mount import Mount
from pycontainerd.pkg.snapshots import KIND_NAMES, Info
from pycontainerd.pkg.timestamps import format_rfc3339nano
from pycontainerd.client.tabwriter import TabWriter

from .common import CommandError, _labels

GC_ROOT = "containerd.io/gc.root"
SNAPSHOTTER_ENV = "CONTAINERD_SNAPSHOTTER"
DEFAULT_SNAPSHOTTER = "overlayfs"  # containerd's DefaultSnapshotter on Linux


def snapshotter_name(flag: str | None) -> str:
    """ctr's choice: the flag, then the environment, then overlayfs."""
    return flag or os.environ.get(SNAPSHOTTER_ENV) or DEFAULT_SNAPSHOTTER


def _sn(client: Client, args: argparse.Namespace) -> Snapshots:
    return Snapshots(client, snapshotter_name(args.snapshotter))


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def human_bytes(n: int) -> str:
    """ctr's progress.Bytes: base 1024, one decimal, unit names up to YiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    size, i = float(n), 0
    while size >= 1024.0 and i < len(units) - 1:
        size /= 1024.0
        i += 1
    return f"{size:02.1f} {units[i]}"


def go_json(obj) -> str:
    """encoding/json's MarshalIndent with 4 spaces, HTML characters escaped."""
    text = json.dumps(obj, indent=4, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def info_json(info: Info) -> str:
    obj: dict = {"Kind": KIND_NAMES.get(info.kind, "Unknown"), "Name": info.name}
    if info.parent:
        obj["Parent"] = info.parent
    if info.labels:
        obj["Labels"] = dict(sorted(info.labels.items()))
    obj["Created"] = format_rfc3339nano(info.created)
    obj["Updated"] = format_rfc3339nano(info.updated)
    return go_json(obj)


def print_mounts(target: str, mounts: list[Mount]) -> None:
    for m in mounts:
        print(f"mount -t {m.type} {m.source} {target} -o {','.join(m.options)}")


def _mounts_json(mounts: list[Mount]) -> str:
    return go_json([{"Type": m.type, "Source": m.source, "Options": m.options or None} for m in mounts])


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    w.write("KEY\tPARENT\tKIND\t\n")
    for info in _sn(client, args).list():
        w.write(f"{info.name}\t{info.parent}\t{KIND_NAMES.get(info.kind, 'Unknown')}\t\n")
    w.flush()
    return 0


def cmd_tree(client: Client, args: argparse.Namespace) -> int:
    # ctr's snapshotTree: nodes in order of first appearance, a placeholder
    # for a parent seen before itself, children in walk order
    nodes: list[str] = []
    parent_of: dict[str, str] = {}
    children: dict[str, list[str]] = {}

    def add(name: str, parent: str) -> None:
        if name not in children:
            nodes.append(name)
            children[name] = []
        parent_of[name] = parent
        if parent:
            if parent not in children:
                add(parent, "")
            children[parent].append(name)

    for info in _sn(client, args).list():
        add(info.name, info.parent)

    def show(name: str, level: int) -> None:
        prefix = "  " * level + ("\\_" if level > 0 else "")
        print(f"{prefix} {name}")
        for c in children[name]:
            show(c, level + 1)

    for name in nodes:
        if not parent_of.get(name):
            show(name, 0)
    return 0


def cmd_usage(client: Client, args: argparse.Namespace) -> int:
    sn = _sn(client, args)
    size_of = (lambda s: str(s)) if args.b else human_bytes
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    w.write("KEY\tSIZE\tINODES\t\n")
    keys = args.keys or [i.name for i in sn.list()]
    for key in keys:
        size, inodes = sn.usage(key)
        w.write(f"{key}\t{size_of(size)}\t{inodes}\t\n")
    w.flush()
    return 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    sn = _sn(client, args)
    for key in args.keys:
        try:
            sn.remove(key)
        except Exception as exc:
            raise CommandError(f'failed to remove "{key}": {exc}') from None
    return 0


def _create(client: Client, args: argparse.Namespace, view: bool) -> int:
    sn = _sn(client, args)
    if view:
        mounts = sn.view(args.key, args.parent or "")
    else:
        mounts = sn.prepare(args.key, args.parent or "", {GC_ROOT: _now_rfc3339()})
    if args.target:
        print_mounts(args.target, mounts)
    if args.mounts:
        print(_mounts_json(mounts))
    return 0


def cmd_prepare(client: Client, args: argparse.Namespace) -> int:
    return _create(client, args, view=False)


def cmd_view(client: Client, args: argparse.Namespace) -> int:
    return _create(client, args, view=True)


def cmd_mounts(client: Client, args: argparse.Namespace) -> int:
    print_mounts(args.target, _sn(client, args).mounts(args.key))
    return 0


def cmd_commit(client: Client, args: argparse.Namespace) -> int:
    _sn(client, args).commit(args.key, args.active, {GC_ROOT: _now_rfc3339()})
    return 0


def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    """ctr's `snapshots diff`: the layer between two snapshots (by default
    the first and its parent), written to the content store under a
    temporary lease and copied to stdout."""
    from pycontainerd.client.diff import snapshots_diff

    labels = dict(label.partition("=")[::2] for label in args.label)
    out = sys.stdout.buffer
    for chunk in snapshots_diff(client, snapshotter_name(args.snapshotter), args.id_a, args.id_b, args.media_type,
                                args.ref, labels, args.keep):
        out.write(chunk)
    out.flush()
    return 0


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    print(info_json(_sn(client, args).stat(args.key)))
    return 0


def cmd_label(client: Client, args: argparse.Namespace) -> int:
    key, labels = _labels(args.args)
    sn = _sn(client, args)
    paths = [f"labels.{k}" for k in labels]
    if paths:
        info = sn.update(key, {k: v for k, v in labels.items() if v}, paths)
    else:
        info = sn.stat(key)
    print(",".join(f"{k}={v}" for k, v in sorted(info.labels.items())))
    return 0


def register(sub) -> None:
    p = sub.add_parser("snapshots", aliases=["snapshot"], help="manage snapshots")
    p.add_argument("--snapshotter", default="", metavar="NAME",
                   help=f'snapshotter name (default: "{DEFAULT_SNAPSHOTTER}") [${SNAPSHOTTER_ENV}]')
    s = p.add_subparsers(dest="subcommand", required=True)

    c = s.add_parser("commit", help="commit an active snapshot into the provided name")
    c.add_argument("key")
    c.add_argument("active")
    c.set_defaults(fn=cmd_commit)

    d = s.add_parser("diff", help="get the diff of two snapshots (default: the first and its parent)")
    d.add_argument("--media-type", default="application/vnd.oci.image.layer.v1.tar+gzip",
                   help="media type to use for creating diff")
    d.add_argument("--ref", default="", help="content upload reference to use")
    d.add_argument("--keep", action="store_true", help="keep diff content. up to creator to delete it.")
    d.add_argument("--label", action="append", default=[], help="labels to attach to the diff (key=value)")
    d.add_argument("id_a", nargs="?", default="")
    d.add_argument("id_b", nargs="?", default="")
    d.set_defaults(fn=cmd_diff)

    i = s.add_parser("info", help="get info about a snapshot")
    i.add_argument("key")
    i.set_defaults(fn=cmd_info)

    ls = s.add_parser("list", aliases=["ls"], help="list snapshots")
    ls.set_defaults(fn=cmd_ls)

    m = s.add_parser("mounts", aliases=["m", "mount"], help="mount gets mount commands for the snapshots")
    m.add_argument("target")
    m.add_argument("key")
    m.set_defaults(fn=cmd_mounts)

    for name, fn, text in (("prepare", cmd_prepare, "prepare a snapshot from a committed snapshot"),
                           ("view", cmd_view, "create a read-only snapshot from a committed snapshot")):
        x = s.add_parser(name, help=text)
        x.add_argument("-t", "--target", default="", help="mount target path, will print mount, if provided")
        x.add_argument("--mounts", action="store_true", help="Print out snapshot mounts as JSON")
        x.add_argument("key")
        x.add_argument("parent", nargs="?", default="")
        x.set_defaults(fn=fn)

    rm = s.add_parser("delete", aliases=["del", "remove", "rm"], help="remove snapshots")
    rm.add_argument("keys", nargs="*")
    rm.set_defaults(fn=cmd_rm)

    lb = s.add_parser("label", help="add labels to content")
    lb.add_argument("args", nargs="*", metavar="<name> [<label>=<value> ...]")
    lb.set_defaults(fn=cmd_label)

    t = s.add_parser("tree", help="display tree view of snapshot branches")
    t.set_defaults(fn=cmd_tree)

    u = s.add_parser("usage", help="usage snapshots")
    u.add_argument("-b", action="store_true", help="display size in bytes")
    u.add_argument("keys", nargs="*")
    u.set_defaults(fn=cmd_usage)
