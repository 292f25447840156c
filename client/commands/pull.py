"""What `content fetch` and `images pull` share: ctr's registry and
platform flags, and the two flows with ctr's output (the fetch progress
table in its final state, then for a pull `unpacking <platform>
<digest>...` per platform and `done: <duration>`)."""

from __future__ import annotations

import argparse
import io
import sys
import time
from typing import Callable

from pycontainerd.client.client import Client
from pycontainerd.client.image_unpack import unpack
from pycontainerd.client.leases import TemporaryLease
from pycontainerd.client.pull import fetch_image, image_platforms
from pycontainerd.client.remotes.fetch import ref_key
from pycontainerd.client.remotes.registry import Options, Registry, static_credentials
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import errdefs, goduration, platforms
from pycontainerd.pkg.oci.descriptor import Descriptor

from .common import CommandError, _labels
from .snapshots import human_bytes, snapshotter_name


def add_flags(p: argparse.ArgumentParser, snapshotter: bool) -> None:
    p.add_argument("--plain-http", action="store_true", help="allow connections using plain HTTP")
    p.add_argument("--skip-verify", "-k", action="store_true", help="skip SSL certificate validation")
    p.add_argument("--user", "-u", default="", help="user[:password] Registry user and password")
    p.add_argument("--hosts-dir", default="", help="Custom hosts configuration directory")
    p.add_argument("--label", action="append", default=[], help="labels to attach to the image")
    p.add_argument("--platform", action="append", default=[], help="Pull content from a specific platform")
    p.add_argument("--all-platforms", action="store_true", help="pull content and metadata from all platforms")
    if snapshotter:
        p.add_argument("--snapshotter", default=None,
                       help="snapshotter name (default: $CONTAINERD_SNAPSHOTTER, else overlayfs)")
    p.add_argument("ref", nargs="?", default="", metavar="<ref>")


def _registry(args: argparse.Namespace) -> Registry:
    creds = None
    if args.user:
        user, _, secret = args.user.partition(":")
        creds = static_credentials(user, secret)
    return Registry(Options(plain_http=args.plain_http, hosts_dir=args.hosts_dir, skip_verify=args.skip_verify,
                            credentials=creds))


def _platforms(args: argparse.Namespace) -> list[platforms.Platform]:
    try:
        return [platforms.parse(p) for p in args.platform] or [platforms.default_spec()]
    except ValueError as exc:
        raise CommandError(f"unable to parse platform: {exc}") from None


def _matcher(args: argparse.Namespace) -> platforms.MatchComparer | None:
    """ctr: every platform with --all-platforms, else the given ones (this
    machine's by default)."""
    if args.all_platforms:
        return None
    return platforms.MatchComparer(_platforms(args))  # containerd's platforms.Ordered


def _fetch(client: Client, args: argparse.Namespace, lease: str):
    if not args.ref:
        raise CommandError("please provide an image reference to pull")
    _, labels = _labels(["", *args.label])
    start = time.monotonic()
    with _registry(args) as registry:
        fetched = fetch_image(client, registry, args.ref, lease, _matcher(args), labels)
    buf = io.StringIO()
    w = TabWriter(buf, 1, 8, 1, " ", 0)
    for row in progress_lines(fetched.image.name, fetched.statuses, time.monotonic() - start, ref_key):
        w.write(row + "\n")
    w.flush()
    sys.stdout.write(buf.getvalue())
    return fetched.image


def run_fetch(client: Client, args: argparse.Namespace) -> int:
    with TemporaryLease(client) as lease:
        _fetch(client, args, lease)
    return 0


def run_pull(client: Client, args: argparse.Namespace) -> int:
    snapshotter = snapshotter_name(args.snapshotter)
    with TemporaryLease(client) as lease:
        image = _fetch(client, args, lease)
        wanted = image_platforms(client, image.target) if args.all_platforms else _platforms(args)
        start = time.monotonic()
        for plat in wanted:
            print(f"unpacking {platforms.format_platform(plat)} {image.target.digest}...", flush=True)
            try:
                unpack(client, image, snapshotter, lease, platforms.only(plat))
            except errdefs.ContainerdError as exc:
                raise CommandError(str(exc)) from None
        print(f"done: {goduration.format(round((time.monotonic() - start) * 1e9))}\t")
    return 0


def progress_lines(ref: str, statuses: list[tuple[Descriptor, str]], elapsed: float,
                   keyer: Callable[[Descriptor], str]) -> list[str]:
    """ctr's fetch progress table in its last state, tab-separated rows
    (the caller aligns them as Go's tabwriter): the ref resolved, each
    descriptor done or exists, then the elapsed/total line."""
    bar = "|" + "\x1b[32m" + "+" * 38 + "\x1b[0m" + "|"
    rows = [f"{ref}:\tresolved\t{bar}\t"]
    total = 0
    for desc, state in statuses:
        rows.append(f"{keyer(desc)}:\t{state}\t{bar}\t")
        if state == "done":
            total += desc.size
    rate = total / elapsed if elapsed > 0 else 0.0
    rows.append(f"elapsed: {elapsed:<4.1f}s\ttotal: {human_bytes(total):>7.6}\t({human_bytes(rate)}/s)\t")
    return rows
