"""The flags `run` and `containers create` share (ctr's ContainerFlags,
SnapshotterFlags and the Linux run flags), and ctr's NewContainer: the
same flags make the same container record and the same spec as ctr.

pyctr adds `--user` (ctr 1.6 has it only on `tasks exec`): applied
after the image's config, as WithUser.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.oci import spec as ocispec
from pycontainerd.pkg.oci.userdb import UserDBError

from ..containers import DEFAULT_RUNTIME, WITH_IMAGE_CONFIG, Container, create_container, runc_options
from .common import CommandError
from .snapshots import DEFAULT_SNAPSHOTTER, SNAPSHOTTER_ENV

RUNC_V2 = "io.containerd.runc.v2"


def add_container_flags(p: argparse.ArgumentParser, run: bool = False) -> None:
    """ctr's flags; with `run`, also the Linux run flags (cpus, cpu shares,
    runc binary) that only `run` has (absent, they are zero, as in ctr)."""
    p.add_argument("--snapshotter", default=os.environ.get(SNAPSHOTTER_ENV) or DEFAULT_SNAPSHOTTER,
                   help=f"snapshotter name (default: {DEFAULT_SNAPSHOTTER}) [${SNAPSHOTTER_ENV}]")
    p.add_argument("--snapshotter-label", action="append", default=[], metavar="K=V",
                   help="labels added to the new snapshot for this container")
    p.add_argument("--cwd", default="", help="specify the working directory of the process")
    p.add_argument("--env", action="append", default=[], help="additional environment variables (e.g. FOO=bar)")
    p.add_argument("--env-file", default="", help="additional environment variables in a file, one per line")
    p.add_argument("--label", action="append", default=[], help="additional labels (e.g. foo=bar)")
    p.add_argument("--mount", action="append", default=[],
                   help="additional mount (e.g. type=bind,src=/tmp,dst=/host,options=rbind:ro)")
    p.add_argument("--net-host", action="store_true", help="enable host networking for the container")
    p.add_argument("--read-only", action="store_true", help="set the container's filesystem as readonly")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, help=f"runtime name (default: {DEFAULT_RUNTIME})")
    p.add_argument("--tty", "-t", action="store_true", help="allocate a TTY for the container")
    p.add_argument("--memory-limit", type=int, default=0, help="memory limit (in bytes) for the container")
    if run:
        p.add_argument("--cpus", type=float, default=0.0, help="set the CFS cpu quota")
        p.add_argument("--cpu-shares", type=int, default=1024, help="set the cpu shares (default: 1024)")
        p.add_argument("--runc-binary", default="", help="specify runc-compatible binary")
    else:
        p.set_defaults(cpus=0.0, cpu_shares=0, runc_binary="")
    p.add_argument("--rootfs", action="store_true", help="use custom rootfs that is not managed by containerd")
    p.add_argument("--user", "-u", default="", help="user id or name[:group] (pyctr's addition)")
    p.add_argument("--privileged", action="store_true", help="run privileged container")


def label_args(items: list[str]) -> dict[str, str]:
    """ctr's LabelArgs: `k=v`, or `k` alone for "true"."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        out[k] = v if sep else "true"
    return out


def spec_opts(args: argparse.Namespace, ref: str, command: list[str]) -> list[Any]:
    """ctr's spec options for these flags, in ctr's order."""
    opts: list[Any] = [ocispec.with_default_spec(), ocispec.with_default_unix_devices]
    try:
        if args.env_file:
            opts.append(ocispec.with_env_file(args.env_file))
        opts.append(ocispec.with_env(args.env))
        opts.append(ocispec.with_mounts([ocispec.parse_mount_flag(m) for m in args.mount]))
    except OSError as exc:
        raise CommandError(f"open {args.env_file}: {exc.strerror.lower()}") from None
    except ocispec.SpecError as exc:
        raise CommandError(str(exc)) from None
    opts.append(ocispec.with_rootfs_path(os.path.abspath(ref)) if args.rootfs else WITH_IMAGE_CONFIG)
    if args.user:
        opts.append(ocispec.with_user(args.user))
    if args.read_only:
        opts.append(ocispec.with_rootfs_readonly)
    if command:
        opts.append(ocispec.with_process_args(*command))
    if args.cwd:
        opts.append(ocispec.with_process_cwd(args.cwd))
    if args.tty:
        opts.append(ocispec.with_tty)
    if args.privileged:
        opts.extend([ocispec.with_privileged, ocispec.with_all_devices_allowed, ocispec.with_host_devices])
    if args.net_host:
        opts.extend(ocispec.with_host_network())
    if args.cpus > 0:
        opts.append(ocispec.with_cpu_cfs(*ocispec.cpus_to_cfs(args.cpus)))
    if args.cpu_shares > 0:
        opts.append(ocispec.with_cpu_shares(args.cpu_shares))
    if args.memory_limit:
        opts.append(ocispec.with_memory_limit(args.memory_limit))
    return opts


def runtime_options(args: argparse.Namespace) -> Any:
    if args.runc_binary and args.runtime != RUNC_V2:
        raise CommandError('specifying runc-binary and runc-systemd-cgroup is only supported for '
                           '"io.containerd.runc.v2" runtime')
    return runc_options(args.runc_binary) if args.runtime == RUNC_V2 else None


def new_container(client: Any, args: argparse.Namespace, ref: str, container_id: str,
                  command: list[str]) -> Container:
    """ctr's run.NewContainer for these flags."""
    opts = spec_opts(args, ref, command)
    try:
        return create_container(
            client, container_id, "" if args.rootfs else ref, spec_opts=opts, labels=label_args(args.label),
            snapshotter=args.snapshotter, snapshot_labels=label_args(args.snapshotter_label),
            runtime=args.runtime, runtime_options=runtime_options(args), rootfs=args.rootfs)
    except (ocispec.SpecError, UserDBError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{exc.strerror or exc}".lower()) from None
    except errdefs.ContainerdError:
        raise
