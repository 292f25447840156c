"""What `content fetch` and `images pull` share: ctr's registry and
platform flags, and the two flows (client/pull.py's pipeline: a pull
unpacks while it downloads).

Output: on a terminal, per-blob lines redrawn in place with state, bytes
and rate (client/pull_progress.py, rich). Otherwise ctr's plain output: the
fetch progress table in its final state, then for a pull `unpacking
<platform> <digest>...` per platform and `done: <duration>`."""

from __future__ import annotations

import argparse
import io
import sys
import time
from typing import Callable

from pycontainerd.client.client import Client
from pycontainerd.client.leases import TemporaryLease
from pycontainerd.client.pull import DEFAULT_MAX_CONCURRENT_DOWNLOADS, image_platforms, pull_image
from pycontainerd.client.pull_progress import LiveProgress, Tracker
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
    p.add_argument("--max-concurrent-downloads", type=int, default=DEFAULT_MAX_CONCURRENT_DOWNLOADS,
                   help="Set the max concurrent downloads for each pull")
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


def _pull(client: Client, args: argparse.Namespace, lease: str, snapshotter: str | None):
    """Fetch (and, given a snapshotter, unpack) args.ref; print the progress."""
    if not args.ref:
        raise CommandError("please provide an image reference to pull")
    _, labels = _labels(["", *args.label])
    if snapshotter is None:
        unpack = None
    elif args.all_platforms:
        unpack = lambda root: image_platforms(client, root, lease)  # noqa: E731
    else:
        unpack = _platforms(args)
    tracker = Tracker()
    live = LiveProgress(tracker, sys.stdout, human_bytes) if sys.stdout.isatty() else None
    start = time.monotonic()
    try:
        with _registry(args) as registry:
            if live is not None:
                with live:
                    fetched = _run(client, registry, args, lease, labels, unpack, snapshotter, tracker)
            else:
                fetched = _run(client, registry, args, lease, labels, unpack, snapshotter, tracker)
    except errdefs.ContainerdError as exc:
        raise CommandError(str(exc)) from None
    if live is None:
        buf = io.StringIO()
        w = TabWriter(buf, 1, 8, 1, " ", 0)
        for row in progress_lines(fetched.image.name, fetched.statuses, time.monotonic() - start, ref_key):
            w.write(row + "\n")
        w.flush()
        sys.stdout.write(buf.getvalue())
        if snapshotter is not None:
            for plat, _ in fetched.unpacked:
                print(f"unpacking {platforms.format_platform(plat)} {fetched.image.target.digest}...")
            print(f"done: {goduration.format(round((time.monotonic() - start) * 1e9))}\t")
    return fetched


def _run(client, registry, args, lease, labels, unpack, snapshotter, tracker):
    if args.max_concurrent_downloads < 1:
        raise CommandError("--max-concurrent-downloads must be at least 1")
    return pull_image(client, registry, args.ref, lease, _matcher(args), labels, unpack=unpack,
                      snapshotter=snapshotter or "", tracker=tracker,
                      max_concurrent_downloads=args.max_concurrent_downloads)


def run_fetch(client: Client, args: argparse.Namespace) -> int:
    with TemporaryLease(client) as lease:
        _pull(client, args, lease, None)
    return 0


def run_pull(client: Client, args: argparse.Namespace) -> int:
    with TemporaryLease(client) as lease:
        _pull(client, args, lease, snapshotter_name(args.snapshotter))
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
