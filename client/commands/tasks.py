"""`tasks ls|ps|start|attach|exec|kill|pause|resume|metrics|rm`, as ctr
has them (cmd/ctr/commands/tasks), with ctr's tables and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from pycontainerd.client.client import Client
from pycontainerd.client.console import Console
from pycontainerd.client.containers import Containers, STOP_SIGNAL_LABEL, temp_mount
from pycontainerd.client.snapshots import Snapshots
from pycontainerd.client.stdio import FIFOSet, StdioCopier
from pycontainerd.client.tabwriter import TabWriter
from pycontainerd.client.tasks import Process, Task, TasksService, load_task, new_task
from pycontainerd.pkg import errdefs, timestamps
from pycontainerd.pkg.oci import spec as ocispec
from pycontainerd.pkg.oci.userdb import UserDBError

from .common import CommandError
from .run import follow, stdio_for

STATUS_NAMES = {"unknown": "UNKNOWN", "created": "CREATED", "running": "RUNNING", "stopped": "STOPPED",
                "paused": "PAUSED", "pausing": "PAUSING"}


def parse_signal(text: str) -> int:
    """moby's ParseSignal, as ctr uses it: a number, or a name with or
    without SIG, any case."""
    if text.lstrip("-").isdigit():
        if int(text) == 0:
            raise CommandError(f"Invalid signal: {text}")
        return int(text)
    name = text.upper().removeprefix("SIG")
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise CommandError(f"Invalid signal: {text}") from None


def _need_id(args: argparse.Namespace) -> str:
    if not args.id:
        raise CommandError("container id must be provided")
    return args.id


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    tasks = TasksService(client).list()
    if args.quiet:
        for t in tasks:
            print(t.id)
        return 0
    w = TabWriter(sys.stdout, 4, 8, 4, " ", 0)
    w.write("TASK\tPID\tSTATUS\t\n")
    for t in tasks:
        w.write(f"{t.id}\t{t.pid}\t{STATUS_NAMES.get(t.status, t.status.upper())}\n")
    w.flush()
    return 0


def _process_details(info) -> str:
    """ctr prints runc's ProcessDetails with Go's %+v of the gogo-generated
    struct, whose XXX_unrecognized field is part of what it prints: the
    text is ctr's byte for byte (`ctr tasks ps` of a task with an exec)."""
    if info is None:
        return "-"
    if info.type_url.endswith("containerd.runc.v1.ProcessDetails"):
        from pycontainerd.api.runtime.runc.options import oci_pb2
        details = oci_pb2.ProcessDetails.FromString(info.value)
        return f"&ProcessDetails{{ExecID:{details.exec_id},XXX_unrecognized:[],}}"
    if info.type_url.endswith("containerd.linux.runc.ProcessDetails"):  # the v1 shim's (runtime v1)
        from pycontainerd.api.runtime.linux.runctypes import runc_pb2
        details = runc_pb2.ProcessDetails.FromString(info.value)
        return f"&ProcessDetails{{ExecID:{details.exec_id},XXX_unrecognized:[],}}"
    return f"{info.type_url}"


def cmd_ps(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    Containers(client).get(container_id)
    w = TabWriter(sys.stdout, 1, 8, 4, " ", 0)
    w.write("PID\tINFO\n")
    for pid, info in load_task(client, container_id).pids():
        w.write(f"{pid}\t{_process_details(info)}\n")
    w.flush()
    return 0


def start_and_follow(proc, con, detach: bool) -> int:
    """Start a task or exec'd process as `ctr tasks start`/`exec` do: unless
    detached, watch it from before the start (so a quick exit is not
    missed), relay its stdio to its exit, then delete it; its exit code (0
    when detached)."""
    try:
        if not detach:
            proc.watch()
        proc.start()
        if detach:
            return 0
        return follow(proc, con)
    finally:
        if not detach:
            with contextlib.suppress(errdefs.ContainerdError):
                proc.delete()


def cmd_start(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    container = Containers(client).get(container_id)
    tty = bool(container.spec_dict().get("process", {}).get("terminal"))
    stdio = stdio_for(tty, args.null_io)
    with (Console() if tty else contextlib.nullcontext()) as con:
        task = new_task(client, container, terminal=tty, fifo_dir=args.fifo_dir, **stdio)
        return start_and_follow(task, con, args.detach)


def cmd_attach(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    container = Containers(client).get(container_id)
    tty = bool(container.spec_dict().get("process", {}).get("terminal"))
    state = TasksService(client).get(container_id)
    fifos = FIFOSet("", state.stdin, state.stdout, "" if tty else state.stderr, tty)
    task = Task(client, container_id)
    with (Console() if tty else contextlib.nullcontext()) as con:
        task.stdio = StdioCopier(fifos, **stdio_for(tty, False), on_stdin_eof=task.close_stdin)
        task.stdio.begin_stdin()
        try:
            code = follow(task, con)
        finally:
            with contextlib.suppress(errdefs.ContainerdError):
                task.delete()
    return code


def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    if not args.exec_id:
        raise CommandError('Required flag "exec-id" not set')
    container = Containers(client).get(container_id)
    spec = container.spec_dict()
    if args.user:
        ctx = ocispec.SpecContext(client.namespace, container_id)
        if container.snapshot_key:
            def with_rootfs(fn):
                with temp_mount(Snapshots(client, container.snapshotter).mounts(container.snapshot_key)) as root:
                    return fn(root)
            ctx.with_rootfs = with_rootfs
        try:
            ocispec.with_user(args.user)(spec, ctx)
        except (ocispec.SpecError, UserDBError) as exc:
            raise CommandError(str(exc)) from None
    process = dict(spec.get("process") or {})
    process["terminal"] = args.tty
    process["args"] = list(args.command)
    if args.cwd:
        process["cwd"] = args.cwd
    task = load_task(client, container_id)
    stdio = stdio_for(args.tty, False)
    with (Console() if args.tty else contextlib.nullcontext()) as con:
        proc = task.exec(args.exec_id, process, terminal=args.tty, fifo_dir=args.fifo_dir, **stdio)
        return start_and_follow(proc, con, args.detach)


def cmd_kill(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    if args.all and args.exec_id:
        raise CommandError("specify an exec-id or all; not both")
    container = Containers(client).get(container_id)
    if args.signal:
        sig = parse_signal(args.signal)
    else:
        sig = parse_signal(container.labels.get(STOP_SIGNAL_LABEL) or "SIGTERM")
    task = load_task(client, container_id)
    task.service.kill(container_id, sig, args.exec_id, args.all)
    return 0


def cmd_pause(client: Client, args: argparse.Namespace) -> int:
    load_task(client, _need_id(args)).pause()
    return 0


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    load_task(client, _need_id(args)).resume()
    return 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    if args.exec_id:
        if not args.ids:
            raise CommandError("container id must be provided")
        container_id = args.ids[0]
        load_task(client, container_id)
        proc = Process(client, container_id, args.exec_id)
        if args.force:
            with contextlib.suppress(errdefs.ContainerdError):
                proc.kill(signal.SIGKILL)
                proc.wait()
        return proc.delete().exit_status
    failed: Exception | None = None
    for container_id in args.ids:
        try:
            Containers(client).get(container_id)
            task = load_task(client, container_id)
            if args.force:
                with contextlib.suppress(errdefs.ContainerdError):
                    if task.state().status != "stopped":
                        task.watch()
                        task.kill(signal.SIGKILL)
                        task.wait()
            status = task.delete()
            if status.exit_status:
                print(f'pyctr: task {container_id} exit with non-zero exit code {status.exit_status}',
                      file=sys.stderr)
        except (errdefs.ContainerdError, CommandError) as exc:
            failed = failed or exc
            print(f"pyctr: unable to delete {container_id}: {exc}", file=sys.stderr)
    if failed is not None:
        raise failed
    return 0


def _metrics_table(w: TabWriter, data) -> None:
    w.write("METRIC\tVALUE\t\n")
    type_url = data.type_url
    if type_url.endswith("io.containerd.cgroups.v1.Metrics"):
        from pycontainerd.api.cgroups.stats.v1 import metrics_pb2
        m = metrics_pb2.Metrics.FromString(data.value)
        if m.HasField("memory"):
            w.write(f"memory.usage_in_bytes\t{m.memory.usage.usage}\t\n")
            w.write(f"memory.limit_in_bytes\t{m.memory.usage.limit}\t\n")
            w.write(f"memory.stat.cache\t{m.memory.total_cache}\t\n")
        if m.HasField("cpu"):
            w.write(f"cpuacct.usage\t{m.cpu.usage.total}\t\n")
            w.write(f"cpuacct.usage_percpu\t[{' '.join(str(x) for x in m.cpu.usage.per_cpu)}]\t\n")
        if m.HasField("pids"):
            w.write(f"pids.current\t{m.pids.current}\t\n")
            w.write(f"pids.limit\t{m.pids.limit}\t\n")
    elif type_url.endswith("io.containerd.cgroups.v2.Metrics"):
        from pycontainerd.api.cgroups.v2.stats import metrics_pb2
        m = metrics_pb2.Metrics.FromString(data.value)
        if m.HasField("pids"):
            w.write(f"pids.current\t{m.pids.current}\t\n")
            w.write(f"pids.limit\t{m.pids.limit}\t\n")
        if m.HasField("cpu"):
            for name in ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec"):
                w.write(f"cpu.{name}\t{getattr(m.cpu, name)}\t\n")
        if m.HasField("memory"):
            for name in ("usage", "usage_limit", "swap_usage", "swap_limit"):
                w.write(f"memory.{name}\t{getattr(m.memory, name)}\t\n")
    else:
        raise CommandError("cannot convert metric data to cgroups.Metrics or windows.Statistics")


def cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    container_id = _need_id(args)
    if args.format != "table":
        raise CommandError("format must be table (pyctr does not print metrics as JSON yet)")
    Containers(client).get(container_id)
    load_task(client, container_id)
    metrics = TasksService(client).metrics(f"id=={container_id}")
    if not metrics:
        raise CommandError(f"no metrics received for {container_id}")
    metric = metrics[0]
    w = TabWriter(sys.stdout, 1, 8, 4, " ", 0)
    w.write("ID\tTIMESTAMP\t\n")
    w.write(f"{metric.id}\t{timestamps.go_string(timestamps.from_pb(metric.timestamp))}\t\n\n")
    _metrics_table(w, metric.data)
    w.flush()
    return 0


def register(sub) -> None:
    t = sub.add_parser("tasks", aliases=["t", "task"], help="manage tasks")
    ts = t.add_subparsers(dest="subcommand", required=True)

    def command(name: str, fn, help: str, aliases: tuple[str, ...] = (), with_id: bool = True):
        p = ts.add_parser(name, aliases=list(aliases), help=help)
        if with_id:
            p.add_argument("id", nargs="?", default="", metavar="CONTAINER")
        p.set_defaults(fn=fn)
        return p

    ls = command("list", cmd_ls, "list tasks", ("ls",), with_id=False)
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the task id")
    command("ps", cmd_ps, "list processes for container")
    st = command("start", cmd_start, "start a container that has been created")
    st.add_argument("--null-io", action="store_true", help="send all IO to /dev/null")
    st.add_argument("--fifo-dir", default="", help="directory used for storing IO FIFOs")
    st.add_argument("--detach", "-d", action="store_true", help="detach from the task after it has started execution")
    command("attach", cmd_attach, "attach to the IO of a running container")
    ex = ts.add_parser("exec", help="execute additional processes in an existing container",
                       usage="pyctr tasks exec [flags] CONTAINER CMD [ARG...]")
    ex.add_argument("--cwd", default="", help="working directory of the new process")
    ex.add_argument("--tty", "-t", action="store_true", help="allocate a TTY for the container")
    ex.add_argument("--detach", "-d", action="store_true", help="detach from the task after it has started execution")
    ex.add_argument("--exec-id", default="", help="exec specific id for the process")
    ex.add_argument("--fifo-dir", default="", help="directory used for storing IO FIFOs")
    ex.add_argument("--user", default="", help="user id or name")
    ex.add_argument("id", nargs="?", default="", metavar="CONTAINER")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD [ARG...]")
    ex.set_defaults(fn=cmd_exec)
    k = command("kill", cmd_kill, "signal a container (default: SIGTERM)")
    k.add_argument("--signal", "-s", default="", help="signal to send to the container")
    k.add_argument("--exec-id", default="", help="process ID to kill")
    k.add_argument("--all", "-a", action="store_true", help="send signal to all processes inside the container")
    command("pause", cmd_pause, "pause an existing container")
    command("resume", cmd_resume, "resume a paused container")
    m = command("metrics", cmd_metrics, "get a single data point of metrics for a task with the built-in Linux runtime",
                ("metric",))
    m.add_argument("--format", default="table", help='"table" (default) or "json"')
    rm = ts.add_parser("delete", aliases=["del", "remove", "rm"], help="delete one or more tasks")
    rm.add_argument("--force", "-f", action="store_true", help="force delete task process")
    rm.add_argument("--exec-id", default="", help="process ID to kill")
    rm.add_argument("ids", nargs="*", metavar="CONTAINER")
    rm.set_defaults(fn=cmd_rm)
