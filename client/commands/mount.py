"""`images mount`, `images unmount` and `images usage`, as ctr has them
(cmd/ctr/commands/images/mount.go, unmount.go; usage from containerd 1.7),
with the same output: mount prints the top chain ID, then the target;
unmount prints the target; usage is the KEY/SIZE/INODES table of the
image's snapshots, top first. The logic is client/image_mount.py.

Unlike ctr 1.6, whose mount reads a global `--snapshotter` that does not
exist (so it always uses overlayfs), pyctr's mount honours `--snapshotter`
and $CONTAINERD_SNAPSHOTTER, as unmount and usage do.
"""

from __future__ import annotations

import argparse
import sys

from pycontainerd.client.client import Client
from pycontainerd.client.image_mount import image_usage, mount_image, unmount_image
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.pkg import platforms

from .common import CommandError
from .snapshots import human_bytes, snapshotter_name


def cmd_mount(client: Client, args: argparse.Namespace) -> int:
    if not args.ref:
        raise CommandError("please provide an image reference to mount")
    if not args.target:
        raise CommandError("please provide a target path to mount to")
    try:
        plat = platforms.parse(args.platform)
    except ValueError as exc:
        raise CommandError(f"unable to parse platform {args.platform}: {exc}") from None
    try:
        mount_image(client, args.ref, args.target, snapshotter_name(args.snapshotter), plat, rw=args.rw,
                    on_chain=lambda chain: print(chain, flush=True))
    except OSError as exc:
        raise CommandError(str(exc)) from None
    print(args.target)
    return 0


def cmd_unmount(client: Client, args: argparse.Namespace) -> int:
    if not args.target:
        raise CommandError("please provide a target path to unmount from")
    try:
        unmount_image(client, args.target, snapshotter_name(args.snapshotter), remove=args.rm)
    except OSError as exc:
        raise CommandError(str(exc)) from None
    print(args.target)
    return 0


def cmd_usage(client: Client, args: argparse.Namespace) -> int:
    if not args.ref:
        raise CommandError("please provide an image reference to mount")  # sic: ctr's words
    rows = image_usage(client, args.ref, snapshotter_name(args.snapshotter))
    w = TabWriter(sys.stdout, 1, 8, 1, " ", 0)
    w.write("KEY\tSIZE\tINODES\t\n")
    for u in rows:
        w.write(f"{u.key}\t{human_bytes(u.size)}\t{u.inodes}\t\n")
    w.flush()
    return 0


def _snapshotter_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshotter", default=None,
                   help="snapshotter name. Empty value stands for the default value. [$CONTAINERD_SNAPSHOTTER]")


def register(isub) -> None:
    m = isub.add_parser("mount", help="mount an image to a target path")
    _snapshotter_flag(m)
    m.add_argument("--rw", action="store_true", help="Enable write support on the mount")
    m.add_argument("--platform", default=platforms.default_string(),
                   help="Mount the image for the specified platform")
    m.add_argument("ref", nargs="?", default="", metavar="<ref>")
    m.add_argument("target", nargs="?", default="", metavar="<target>")
    m.set_defaults(fn=cmd_mount)
    u = isub.add_parser("unmount", help="unmount the image from the target")
    _snapshotter_flag(u)
    u.add_argument("--rm", action="store_true", help="remove the snapshot after a successful unmount")
    u.add_argument("target", nargs="?", default="", metavar="<target>")
    u.set_defaults(fn=cmd_unmount)
    us = isub.add_parser("usage", help="Display usage of snapshots for a given image ref")
    _snapshotter_flag(us)
    us.add_argument("ref", nargs="?", default="", metavar="<ref>")
    us.set_defaults(fn=cmd_usage)
