"""`images ls|tag|rm`, as ctr has them (cmd/ctr/commands/images), with the
same output: `ls` is ctr's table (size for this machine's platform, the
platforms the image has, labels), `tag` prints each new name, `rm` each
name it removed and warns about names it did not find.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pycontainerd.client.client import Client
from pycontainerd.client.content import ContentClient
from pycontainerd.client.images import ContentWalk, Images
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.platforms import default_string

from .common import CommandError
from .snapshots import human_bytes


def _walk(client: Client) -> ContentWalk:
    content = ContentClient(client)
    return ContentWalk(lambda dgst: b"".join(content.read(dgst)))


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    try:
        images = Images(client).list(*args.filters)
    except errdefs.ContainerdError as exc:
        raise CommandError(f"failed to list images: {exc}") from None
    if args.quiet:
        for image in images:
            print(image.name)
        return 0
    walk = _walk(client)
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    w.write("REF\tTYPE\tDIGEST\tSIZE\tPLATFORMS\tLABELS\t\n")
    for image in images:
        size, err = walk.size(image.target, default_string())
        if err:
            print(f'level=error msg="failed calculating size for image {image.name}" error="{err}"', file=sys.stderr)
        try:
            platforms = ",".join(walk.platforms(image.target)) or "-"
        except (errdefs.ContainerdError, ValueError) as exc:
            print(f'level=error msg="failed resolving platform for image {image.name}" error="{exc}"',
                  file=sys.stderr)
            platforms = "-"
        labels = ",".join(sorted(f"{k}={v}" for k, v in image.labels.items())) or "-"
        w.write(f"{image.name}\t{image.target.media_type}\t{image.target.digest}\t{human_bytes(size)}\t"
                f"{platforms}\t{labels}\t\n")
    w.flush()
    return 0


def cmd_tag(client: Client, args: argparse.Namespace) -> int:
    if not args.refs:
        raise CommandError("please provide an image reference to tag from")
    if len(args.refs) < 2:
        raise CommandError("please provide an image reference to tag to")
    images = Images(client)
    image = images.get(args.refs[0])
    for name in args.refs[1:]:
        image.name = name
        try:
            images.create(image)
        except errdefs.AlreadyExists:
            if not args.force:
                raise
            images.delete(name)
            images.create(image)
        print(name)
    return 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    images = Images(client)
    failed = ""
    for i, name in enumerate(args.refs):
        try:
            # as ctr: only the last delete waits for the collection
            images.delete(name, sync=args.sync and i == len(args.refs) - 1)
        except errdefs.NotFound:
            print(f'level=warning msg="{name}: image not found"', file=sys.stderr)
            continue
        except errdefs.ContainerdError as exc:
            print(f'level=error msg="unable to delete {name}" error="{exc}"', file=sys.stderr)
            failed = failed or f"unable to delete {name}: {exc}"
            continue
        print(name)
    if failed:
        raise CommandError(failed)
    return 0


def cmd_pull(client: Client, args: argparse.Namespace) -> int:
    from .pull import run_pull

    return run_pull(client, args)


def cmd_import(client: Client, args: argparse.Namespace) -> int:
    """ctr's `images import`: the archive in, then each image unpacked."""
    from pycontainerd.client import archive_import as ai
    if args.base_name:
        opts = ai.ImportOptions(ref_translator=ai.filter_ref_prefix(args.base_name))
        prefix = args.base_name
    else:
        prefix = "import-" + time.strftime("%Y-%m-%d")
        opts = ai.ImportOptions(ref_translator=ai.add_ref_prefix(prefix))
    if args.digests:
        opts.digest_ref = ai.digest_translator(prefix)
    opts.index_name, opts.all_platforms = args.index_name, args.all_platforms
    try:
        if args.file == "-":
            images = ai.import_archive(client, sys.stdin.buffer, opts)
        else:
            with open(args.file, "rb") as f:
                images = ai.import_archive(client, f, opts)
    except OSError as exc:
        raise CommandError(f"open {args.file}: {exc.strerror.lower() if exc.strerror else exc}") from None
    if not args.no_unpack:
        from pycontainerd.client.image_unpack import resolve_snapshotter, unpack
        from pycontainerd.client.leases import TemporaryLease

        snapshotter = resolve_snapshotter(client, args.snapshotter)
        with TemporaryLease(client) as lease:
            for image in images:
                print(f"unpacking {image.name} ({image.target.digest})...", end="", flush=True)
                unpack(client, image, snapshotter, lease)
                print("done")
    return 0


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    from pycontainerd.client.archive_export import export
    if not args.out or not args.refs:
        raise CommandError("please provide both an output filename and an image reference to export")
    if args.out == "-":
        export(client, sys.stdout.buffer, args.refs, args.all_platforms)
        return 0
    tmp = f"{args.out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            export(client, f, args.refs, args.all_platforms)
        os.replace(tmp, args.out)
    except OSError as exc:
        raise CommandError(f"open {args.out}: {exc.strerror.lower() if exc.strerror else exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return 0


def cmd_check(client: Client, args: argparse.Namespace) -> int:
    from pycontainerd.client.image_check import check, is_unpacked
    from pycontainerd.client.image_unpack import resolve_snapshotter
    from pycontainerd.client.snapshots import Snapshots
    from pycontainerd.pkg.platforms import default
    try:
        images = Images(client).list(*args.filters)
    except errdefs.ContainerdError as exc:
        raise CommandError(f"failed listing images: {exc}") from None
    content, matcher, failed = ContentClient(client), default(), ""
    snapshots = Snapshots(client, resolve_snapshotter(client, args.snapshotter))
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    if images and not args.quiet:
        w.write("REF\tTYPE\tDIGEST\tSTATUS\tSIZE\tUNPACKED\t\n")
    for image in images:
        try:
            r = check(content, image.target, matcher)
            complete = r.available and not r.missing
            status = "complete" if not r.missing else "incomplete"
            present = sum(d.size for d in r.present)
            if r.available:
                status += f" ({len(r.present)}/{len(r.required)})"
                size = f"{human_bytes(present)}/{human_bytes(sum(d.size for d in r.required))}"
            else:
                status, size = f"unavailable ({len(r.present)}/?)", f"{human_bytes(present)}/?"
        except errdefs.ContainerdError as exc:
            print(f'level=error msg="unable to check {image.name}" error="{exc}"', file=sys.stderr)
            failed = failed or f"unable to check {image.name}: {exc}"
            status, size, complete = "error", "-", False
        try:
            unpacked = is_unpacked(content, snapshots, image.target, matcher)
        except errdefs.ContainerdError as exc:
            print(f'level=error msg="unable to check unpack for {image.name}" error="{exc}"', file=sys.stderr)
            failed = failed or f"unable to check unpack for {image.name}: {exc}"
            unpacked = False
        if args.quiet:
            if complete:
                print(image.name)
        else:
            w.write(f"{image.name}\t{image.target.media_type}\t{image.target.digest}\t{status}\t{size}\t"
                    f"{str(unpacked).lower()}\n")
    if not args.quiet:
        w.flush()
    if failed:
        raise CommandError(failed)
    return 0


def register(sub) -> None:
    im = sub.add_parser("images", aliases=["image", "i"], help="manage images")
    isub = im.add_subparsers(dest="subcommand", required=True)
    ls = isub.add_parser("list", aliases=["ls"], help="list images known to containerd")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the image refs")
    ls.add_argument("filters", nargs="*", metavar="<filter>")
    ls.set_defaults(fn=cmd_ls)
    tag = isub.add_parser("tag", help="tag an image")
    tag.add_argument("--force", action="store_true", help="force target_ref to be created, regardless if it already exists")
    tag.add_argument("refs", nargs="*", metavar="<ref>", help="<source_ref> <target_ref> [<target_ref>, ...]")
    tag.set_defaults(fn=cmd_tag)
    rm = isub.add_parser("delete", aliases=["del", "remove", "rm"], help="remove one or more images by reference")
    rm.add_argument("--sync", action="store_true", help="Synchronously remove image and all associated resources")
    rm.add_argument("refs", nargs="*", metavar="<ref>")
    rm.set_defaults(fn=cmd_rm)
    from .pull import add_flags

    pull = isub.add_parser("pull", help="pull an image from a remote")
    add_flags(pull, snapshotter=True)
    pull.set_defaults(fn=cmd_pull)
    chk = isub.add_parser("check", help="check existing images to ensure all content is available locally")
    chk.add_argument("-q", "--quiet", action="store_true", help="print only the ready image refs (fully downloaded and unpacked)")
    chk.add_argument("--snapshotter", default=os.environ.get("CONTAINERD_SNAPSHOTTER", ""),
                     help="snapshotter name. Empty value stands for the default value.")
    chk.add_argument("filters", nargs="*", metavar="<filter>")
    chk.set_defaults(fn=cmd_check)
    imp = isub.add_parser("import", help="import images (OCI layout or docker save tar)")
    imp.add_argument("--base-name", default="", help="base image name for added images, when provided only images with this name prefix are imported")
    imp.add_argument("--digests", action="store_true", help="whether to create digest images (default: false)")
    imp.add_argument("--index-name", default="", help="image name to keep index as, by default index is discarded")
    imp.add_argument("--all-platforms", action="store_true", help="imports content for all platforms, false by default")
    imp.add_argument("--snapshotter", default=os.environ.get("CONTAINERD_SNAPSHOTTER", ""), help="snapshotter name. Empty value stands for the default value.")
    imp.add_argument("--no-unpack", action="store_true", help="skip unpacking the images, false by default")
    imp.add_argument("file", metavar="<in>")
    imp.set_defaults(fn=cmd_import)
    exp = isub.add_parser("export", help="export images as an OCI layout tar")
    exp.add_argument("--all-platforms", action="store_true", help="exports content from all platforms")
    exp.add_argument("out", nargs="?", default="", metavar="<out>")
    exp.add_argument("refs", nargs="*", metavar="<image>")
    exp.set_defaults(fn=cmd_export)
    from . import mount, push

    push.register(isub)
    mount.register(isub)
