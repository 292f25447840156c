"""`run`: ctr's run (cmd/ctr/commands/run): create the container as ctr
does, create its task with stdio through FIFOs (or the shim's pty with
-t), start it, and unless -d wait for it, pass signals on (or follow
window resizes with -t), delete the task (and with --rm the container and
its snapshot), and exit with the container's exit code."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any

from pycontainerd.client.client import Client
from pycontainerd.client.console import Console
from pycontainerd.client.containers import delete_container
from pycontainerd.client.tasks import Process, new_task
from pycontainerd.pkg import errdefs

from .common import CommandError
from .container_flags import add_container_flags, new_container

# what ctr passes on to a task it waits for (it forwards every signal Go
# may catch; these are the ones a terminal or a supervisor sends)
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def forwarding_signals(process: Process):
    """ctr's ForwardAllSignals: a signal we get is sent to the process."""
    def forward(signum: int, _frame: Any) -> None:
        def send() -> None:
            with contextlib.suppress(errdefs.ContainerdError):
                process.kill(signum)
        threading.Thread(target=send, daemon=True).start()
    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def follow(process: Process, con: Console | None) -> int:
    """Wait for a started process as ctr does; its exit status."""
    if con is not None:
        con.follow_resizes(process.resize)
        return process.wait().exit_status
    with forwarding_signals(process):
        return process.wait().exit_status


def stdio_for(tty: bool, null_io: bool) -> dict[str, int | None]:
    if tty and null_io:
        raise CommandError("tty and null-io cannot be used together")
    if null_io:
        return {"stdin": None, "stdout": None, "stderr": None}
    return {"stdin": sys.stdin.fileno(), "stdout": sys.stdout.fileno(), "stderr": None if tty else sys.stderr.fileno()}


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    if not args.ref:
        raise CommandError("image ref must be provided")
    if not args.id:
        raise CommandError("container id must be provided")
    if args.rm and args.detach:
        raise CommandError("flags --detach and --rm cannot be specified together")
    if args.cni:
        raise CommandError("--cni is not supported: pycontainerd has no CNI networking yet (use --net-host)")
    stdio = stdio_for(args.tty, args.null_io)
    sys.stdout.flush()
    container = new_container(client, args, args.ref, args.id, args.command)
    try:
        with (Console() if args.tty else contextlib.nullcontext()) as con:
            task = new_task(client, container, terminal=args.tty, fifo_dir=args.fifo_dir, **stdio)
            try:
                if not args.detach:
                    task.watch()
                task.start()
                if args.detach:
                    return 0
                code = follow(task, con)
                task.delete()
            except BaseException:
                if not args.detach:
                    with contextlib.suppress(errdefs.ContainerdError):
                        task.delete()
                raise
    finally:
        if args.rm and not args.detach:
            delete_container(client, container.id)
    return code


def register(sub) -> None:
    p = sub.add_parser("run", help="run a container",
                       usage="pyctr run [flags] Image|RootFS ID [COMMAND] [ARG...]")
    p.add_argument("--rm", action="store_true", help="remove the container after running, cannot be used with --detach")
    p.add_argument("--null-io", action="store_true", help="send all IO to /dev/null")
    p.add_argument("--detach", "-d", action="store_true",
                   help="detach from the task after it has started execution, cannot be used with --rm")
    p.add_argument("--fifo-dir", default="", help="directory used for storing IO FIFOs")
    p.add_argument("--cni", action="store_true", help="enable cni networking for the container (refused: no CNI yet)")
    add_container_flags(p, run=True)
    p.add_argument("ref", nargs="?", default="", metavar="Image|RootFS")
    p.add_argument("id", nargs="?", default="", metavar="ID")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="[COMMAND] [ARG...]")
    p.set_defaults(fn=cmd_run)
