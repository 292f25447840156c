"""`containers create|ls|info|label|rm`, as ctr has them
(cmd/ctr/commands/containers), with ctr's output: `ls` is ctr's table,
`info` ctr's JSON (Go's field order, the spec decoded), `label` the
labels set, comma-joined."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from pycontainerd.client.client import Client
from pycontainerd.client.containers import Container, Containers, delete_container, set_labels
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.client.tasks import Task, TasksService
from pycontainerd.pkg import errdefs, timestamps
from pycontainerd.pkg.oci import spec as ocispec

from .common import CommandError, _labels
from .container_flags import add_container_flags, new_container


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    if not args.ref:
        raise CommandError("image ref must be provided: invalid argument")
    if not args.id:
        raise CommandError("container id must be provided: invalid argument")
    new_container(client, args, args.ref, args.id, args.command)
    return 0


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    containers = Containers(client).list(*args.filters)
    if args.quiet:
        for c in containers:
            print(c.id)
        return 0
    w = TabWriter(sys.stdout, 4, 8, 4, " ", 0)
    w.write("CONTAINER\tIMAGE\tRUNTIME\t\n")
    for c in containers:
        w.write(f"{c.id}\t{c.image or '-'}\t{c.runtime}\t\n")
    w.flush()
    return 0


def _any_json(a: Any) -> dict:
    """gogo's types.Any as Go's encoding/json writes it."""
    out: dict[str, Any] = {"type_url": a.type_url}
    if a.value:
        out["value"] = base64.b64encode(a.value).decode()
    return out


def info_json(c: Container, spec_only: bool = False) -> str:
    """What `ctr containers info` prints for this record."""
    spec = ocispec.shape(c.spec_dict()) if c.spec is not None and c.spec.value else None
    if spec_only:
        return ocispec.go_json(spec, indent=True)
    doc: dict[str, Any] = {
        "ID": c.id,
        "Labels": {k: c.labels[k] for k in sorted(c.labels)} or None,
        "Image": c.image,
        "Runtime": {"Name": c.runtime, "Options": _any_json(c.runtime_options) if c.runtime_options else None},
    }
    if spec is None:
        doc["Spec"] = _any_json(c.spec) if c.spec is not None else None
    doc.update({
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": timestamps.format_rfc3339nano(c.created_at),
        "UpdatedAt": timestamps.format_rfc3339nano(c.updated_at),
        "Extensions": {k: _any_json(c.extensions[k]) for k in sorted(c.extensions)} or None,
    })
    if spec is not None:
        doc["Spec"] = spec
    return ocispec.go_json(doc, indent=True)


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    if not args.id:
        raise CommandError("container id must be provided: invalid argument")
    print(info_json(Containers(client).get(args.id), args.spec))
    return 0


def cmd_label(client: Client, args: argparse.Namespace) -> int:
    container_id, labels = _labels(args.args)
    if not container_id:
        raise CommandError("container id must be provided: invalid argument")
    result = set_labels(client, container_id, labels)
    print(",".join(f"{k}={v}" for k, v in result.items()))
    return 0


def delete_one(client: Client, container_id: str, keep_snapshot: bool) -> None:
    """ctr's deleteContainer: a task is deleted first when it is stopped
    or only created; a running one stops the delete."""
    Containers(client).get(container_id)
    tasks = TasksService(client)
    try:
        state = tasks.get(container_id)
    except errdefs.NotFound:
        state = None
    if state is not None:
        if state.status not in ("stopped", "created"):
            raise CommandError(f"cannot delete a non stopped container: {{{state.status} 0 0001-01-01 00:00:00 +0000 UTC}}")
        Task(client, container_id).delete()
    delete_container(client, container_id, cleanup_snapshot=not keep_snapshot)


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    if not args.ids:
        raise CommandError("must specify at least one container to delete: invalid argument")
    failed: Exception | None = None
    for container_id in args.ids:
        try:
            delete_one(client, container_id, args.keep_snapshot)
        except (errdefs.ContainerdError, CommandError) as exc:
            failed = failed or exc
            print(f'pyctr: failed to delete container "{container_id}": {exc}', file=sys.stderr)
    if failed is not None:
        raise failed
    return 0


def register(sub) -> None:
    c = sub.add_parser("containers", aliases=["c", "container"], help="manage containers")
    csub = c.add_subparsers(dest="subcommand", required=True)
    cr = csub.add_parser("create", help="create container")
    add_container_flags(cr)
    cr.add_argument("ref", nargs="?", default="", metavar="Image|RootFS")
    cr.add_argument("id", nargs="?", default="", metavar="CONTAINER")
    cr.add_argument("command", nargs=argparse.REMAINDER, metavar="[COMMAND] [ARG...]")
    cr.set_defaults(fn=cmd_create)
    ls = csub.add_parser("list", aliases=["ls"], help="list containers")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the container id")
    ls.add_argument("filters", nargs="*", metavar="<filter>")
    ls.set_defaults(fn=cmd_ls)
    rm = csub.add_parser("delete", aliases=["del", "remove", "rm"], help="delete one or more existing containers")
    rm.add_argument("--keep-snapshot", action="store_true", help="do not clean up snapshot with container")
    rm.add_argument("ids", nargs="*", metavar="CONTAINER")
    rm.set_defaults(fn=cmd_rm)
    lb = csub.add_parser("label", help="set and clear labels for a container")
    lb.add_argument("args", nargs="*", metavar="CONTAINER [<key>=<value>, ...]")
    lb.set_defaults(fn=cmd_label)
    info = csub.add_parser("info", help="get info about a container")
    info.add_argument("--spec", action="store_true", help="only display the spec")
    info.add_argument("id", nargs="?", default="", metavar="CONTAINER")
    info.set_defaults(fn=cmd_info)
