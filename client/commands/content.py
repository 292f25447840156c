"""`content ingest|ls|get|label|active|rm`, as ctr has them (same flags,
same output: tables through the Go tabwriter port with ctr's settings,
sizes and ages through go-units' HumanSize and HumanDuration)."""

from __future__ import annotations

import argparse
import sys
import time

from pycontainerd.client.client import Client
from pycontainerd.client.content import ContentClient
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.digest import digest_error

from .common import CommandError, _labels, _parse_duration


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000.0 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _since(ns: int) -> float:
    return (time.time_ns() - ns) / 1e9


def _parse_digest(text: str) -> str:
    err = digest_error(text)
    if err:
        raise CommandError(err)
    return text


def cmd_ingest(client: Client, args: argparse.Namespace) -> int:
    expected = args.expected_digest or ""
    if expected:
        _parse_digest(expected)
    if not args.ref:
        raise CommandError("must specify a transaction reference")
    ContentClient(client).write_blob(args.ref, sys.stdin.buffer, args.expected_size, expected)
    return 0


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    if args.quiet:
        for info in ContentClient(client).list(*args.filters):
            print(info.digest)
        return 0
    w = TabWriter(sys.stdout, 1, 8, 1, "\t", 0)
    w.write("DIGEST\tSIZE\tAGE\tLABELS\n")
    try:  # as ctr: the header is printed even when the listing fails (a bad filter)
        for info in ContentClient(client).list(*args.filters):
            labels = ",".join(f"{k}={v}" for k, v in info.labels.items()) or "-"
            w.write(f"{info.digest}\t{human_size(info.size)}\t{human_duration(_since(info.created_at))}\t{labels}\n")
    finally:
        w.flush()
    return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    dgst = _parse_digest(args.digest or "")
    cc = ContentClient(client)
    cc.info(dgst)  # as ctr's ReaderAt: NotFound before any output
    out = sys.stdout.buffer
    for chunk in cc.read(dgst):
        out.write(chunk)
    out.flush()
    return 0


def cmd_label(client: Client, args: argparse.Namespace) -> int:
    obj, labels = _labels(args.args)
    dgst = _parse_digest(obj)
    cc = ContentClient(client)
    paths = [f"labels.{k}" for k in labels]
    if paths:
        info = cc.update(dgst, {k: v for k, v in labels.items() if v}, paths)
    else:
        info = cc.info(dgst)
    print(",".join(f"{k}={v}" for k, v in info.labels.items()))
    return 0


def cmd_active(client: Client, args: argparse.Namespace) -> int:
    statuses = ContentClient(client).list_statuses(*([args.match] if args.match is not None else []))
    w = TabWriter(sys.stdout, 1, 8, 1, "\t", 0)
    w.write("REF\tSIZE\tAGE\t\n")
    for st in statuses:
        w.write(f"{st.ref}\t{human_size(st.offset)}\t{human_duration(_since(st.started_at))}\t\n")
    w.flush()
    return 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    cc = ContentClient(client)
    first_error = None
    for arg in args.digests:
        err = digest_error(arg)
        if err:
            first_error = first_error or err
            print(f'level=error msg="could not delete {arg}" error="{err}"', file=sys.stderr)
            continue
        try:
            cc.delete(arg)
        except errdefs.NotFound:
            continue
        except errdefs.ContainerdError as exc:
            first_error = first_error or str(exc)
            print(f'level=error msg="could not delete {arg}" error="{exc}"', file=sys.stderr)
            continue
        print(arg)
    if first_error:
        raise CommandError(first_error)
    return 0


def cmd_fetch(client: Client, args: argparse.Namespace) -> int:
    from .pull import run_fetch

    return run_fetch(client, args)


def register(sub) -> None:
    c = sub.add_parser("content", help="manage content")
    csub = c.add_subparsers(dest="subcommand", required=True)

    ing = csub.add_parser("ingest", help="accept content into the store")
    ing.add_argument("--expected-size", type=int, default=0, help="validate against provided size")
    ing.add_argument("--expected-digest", default="", help="verify content against expected digest")
    ing.add_argument("ref", nargs="?", default="", metavar="<key>")
    ing.set_defaults(fn=cmd_ingest)

    ls = csub.add_parser("list", aliases=["ls"], help="list all blobs in the store")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the blob digest")
    ls.add_argument("filters", nargs="*")
    ls.set_defaults(fn=cmd_ls)

    get = csub.add_parser("get", help="get the data for an object")
    get.add_argument("digest", nargs="?", default="", metavar="<digest>")
    get.set_defaults(fn=cmd_get)

    lb = csub.add_parser("label", help="add labels to content")
    lb.add_argument("args", nargs="*", metavar="<digest> [<label>=<value> ...]")
    lb.set_defaults(fn=cmd_label)

    act = csub.add_parser("active", help="display active transfers")
    # ctr takes and ignores it; its own dest, or it would replace the global --timeout
    act.add_argument("-t", "--timeout", dest="fetch_timeout", type=_parse_duration, default=None,
                     help="total timeout for fetch (accepted, unused, as in ctr)")
    act.add_argument("--root", default="/tmp/content", help="path to content store root")
    act.add_argument("match", nargs="?", default=None, metavar="<regexp>")
    act.set_defaults(fn=cmd_active)

    from .pull import add_flags

    fetch = csub.add_parser("fetch", help="fetch all content for an image into containerd")
    add_flags(fetch, snapshotter=False)
    fetch.set_defaults(fn=cmd_fetch)

    rm = csub.add_parser("delete", aliases=["del", "remove", "rm"], help="permanently delete one or more blobs")
    rm.add_argument("digests", nargs="*", metavar="<digest>")
    rm.set_defaults(fn=cmd_rm)
