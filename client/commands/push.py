"""`images push`, as ctr has it (cmd/ctr/commands/images/push.go): the
image named by `<local>` (or `<remote>`), or the manifest `--manifest`
names, pushed to `<remote>` with ctr's registry flags; then ctr's progress
table in its final state (each descriptor `done`, the elapsed time and the
bytes pushed, skipped and mounted ones counted as ctr counts them)."""

from __future__ import annotations

import argparse
import io
import sys
import time

from pycontainerd.client.client import Client
from pycontainerd.client.content import ContentClient
from pycontainerd.client.image_push import push_image, select_platform
from pycontainerd.client.images import Images
from pycontainerd.client.remotes.registry import Options, Registry, static_credentials
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import digest as _digest
from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.oci.descriptor import Descriptor

from .common import CommandError
from .snapshots import human_bytes

BAR_DONE = "|" + "\x1b[32m" + "+" * 38 + "\x1b[0m" + "|"  # ctr's progress.Bar(1.0), 40 wide
BAR_EMPTY = "|" + " " * 38 + "|"


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    """The registry flags of ctr's commands.RegistryFlags that pyctr has."""
    p.add_argument("--skip-verify", "-k", action="store_true", help="skip SSL certificate validation")
    p.add_argument("--plain-http", action="store_true", help="allow connections using plain HTTP")
    p.add_argument("--user", "-u", default="", help="user[:password] Registry user and password")
    p.add_argument("--hosts-dir", default="", help="Custom hosts configuration directory")
    p.add_argument("--tlscacert", default="", help="path to TLS root CA")


def registry_from(args: argparse.Namespace) -> Registry:
    creds = None
    if args.user:
        user, _, secret = args.user.partition(":")
        creds = static_credentials(user, secret)
    return Registry(Options(plain_http=args.plain_http, hosts_dir=args.hosts_dir, skip_verify=args.skip_verify,
                            ca_file=args.tlscacert, credentials=creds))


def _target(client: Client, content: ContentClient, args: argparse.Namespace) -> Descriptor:
    if args.manifest:
        err = _digest.digest_error(args.manifest)
        if err is not None:
            raise CommandError(f"invalid manifest digest: {err}")
        return Descriptor(args.manifest_type, args.manifest, content.info(args.manifest).size)
    local = args.local or args.remote
    try:
        desc = Images(client).get(local).target
    except errdefs.ContainerdError as exc:
        raise CommandError(f"unable to resolve image to manifest: {exc}") from None
    if len(args.platform) == 1:
        try:
            plat = platforms.parse(args.platform[0])
        except ValueError as exc:
            raise CommandError(f"invalid platform {errdefs.go_quote(args.platform[0])}: {exc}") from None
        desc = select_platform(content, desc, plat)
    return desc


def cmd_push(client: Client, args: argparse.Namespace) -> int:
    if not args.remote:
        raise CommandError("please provide a remote image reference to push")
    content = ContentClient(client)
    desc = _target(client, content, args)
    order: list[str] = []
    states: dict[str, tuple[Descriptor, str]] = {}

    def on_status(key: str, d: Descriptor, state: str) -> None:
        if key not in states:
            order.append(key)
        states[key] = (d, state)

    start = time.monotonic()
    failure: Exception | None = None
    try:
        with registry_from(args) as registry:
            push_image(content, registry, args.remote, desc, on_status=on_status,
                       allow_non_distributable=args.allow_non_distributable_blobs)
    except errdefs.ContainerdError as exc:
        failure = exc
    if not getattr(args, "debug", False):  # ctr shows no progress with --debug
        _print_table([states[k] for k in order], time.monotonic() - start)
    if failure is not None:
        raise failure
    return 0


def _print_table(statuses: list[tuple[Descriptor, str]], elapsed: float) -> None:
    """ctr's content.Display in its last state."""
    from pycontainerd.client.remotes.fetch import ref_key

    buf = io.StringIO()
    w = TabWriter(buf, 1, 8, 1, " ", 0)
    total = 0
    for d, state in statuses:
        if state == "done":
            total += d.size
        w.write(f"{ref_key(d)}:\t{state}\t{BAR_DONE if state == 'done' else BAR_EMPTY}\t\n")
    rate = total / elapsed if elapsed > 0 else 0.0
    w.write(f"elapsed: {elapsed:<4.1f}s\ttotal: {human_bytes(total):>7.6}\t({human_bytes(int(rate))}/s)\t\n")
    w.flush()
    sys.stdout.write(buf.getvalue())
    sys.stdout.flush()


def register(isub) -> None:
    p = isub.add_parser("push", help="push an image to a remote")
    add_registry_flags(p)
    p.add_argument("--manifest", default="", help="digest of manifest")
    p.add_argument("--manifest-type", default=mediatypes.OCI_MANIFEST, help="media type of manifest digest")
    p.add_argument("--platform", action="append", default=[], help="push content from a specific platform")
    p.add_argument("--allow-non-distributable-blobs", action="store_true",
                   help="Allow pushing blobs that are marked as non-distributable")
    p.add_argument("remote", nargs="?", default="", metavar="<remote>")
    p.add_argument("local", nargs="?", default="", metavar="<local>")
    p.set_defaults(fn=cmd_push)
