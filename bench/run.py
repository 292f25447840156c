#!/usr/bin/env python3
"""`ctr run --rm` latency and the daemon's RSS with containers running: pycontainerd against the real containerd.

Both daemons are started the way bench/startup.py starts them (fresh root,
state and socket on /dev/shm, stopped by PID) and run at the same time; the
same busybox-static image (tests/e2e/busybox_image.py's OCI layout tar) is
imported into each with the real `ctr images import`. Then:

  run --rm    wall time of the real `ctr --address SOCK run --rm IMAGE ID
              /bin/true`, --runs times per daemon, alternating daemons, a
              fresh ID each time. The daemon's own CPU time per run (user +
              system of its process alone, from /proc/PID/stat) is kept too:
              it is the daemon's share, where the shim and runc are the rest.
  idle RSS    VmRSS of the daemon's own process (not its shims) after the
              runs and --settle seconds idle.
  RSS, 20     the same with --containers containers running (`ctr run -d
              IMAGE ID /bin/sleep 300` each), after --settle seconds; then
              every one is killed and removed (tasks kill -s SIGKILL, tasks
              rm, containers rm).

Then, to say where one run --rm goes, --breakdown-runs alternating runs per
daemon do ctr run --rm's steps with pycontainerd's client library, each
timed from the client: container create (image config read, snapshot
prepare, Containers.Create), task create (Tasks.Create: the shim is started
and runc creates the container), start, wait (the exit of /bin/true
reaching the client), task delete (runc delete, the shim stops), container
delete (its snapshot too).

Reported: medians, the ratio pycontainerd/containerd and the targets
(run --rm <= 1.2x, RSS <= 1.2x), with the load average before and after.
containerd runs without CRI (it has nothing to do with ctr run and would
only inflate containerd's RSS) unless --containerd-cri. A benchmark, not a
test: it exits 0 on MISS.

    .venv/bin/python bench/run.py [--runs 15] [--containers 20] [--json]
"""
from __future__ import annotations

import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
import startup  # noqa: E402  (running, proc_field: how every benchmark runs a daemon)

REPO = startup.REPO
KINDS = startup.KINDS
TARGETS = {"run_ms": 1.2, "idle_rss_mib": 1.2, "busy_rss_mib": 1.2}
STEPS = ("container create", "task create", "start", "wait", "task delete", "container delete")


def ctr(args, sock: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run([args.ctr, "--address", sock, *argv], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"ctr {' '.join(argv)} failed ({r.returncode}): "
                           f"{r.stderr.decode(errors='replace').strip()[-500:]}")
    return r


def own_cpu_ms(pid: int) -> float:
    """user + system time of the process itself (not its children), in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    return int(startup.proc_field(pid, "VmRSS").split()[0]) / 1024


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_rm(args, sock: str, pid: int, image: str, cid: str) -> tuple[float, float]:
    """(wall ms, daemon CPU ms) of one `ctr run --rm IMAGE cid /bin/true`."""
    cpu0 = own_cpu_ms(pid)
    t0 = time.perf_counter()
    ctr(args, sock, "run", "--rm", image, cid, "/bin/true")
    wall = (time.perf_counter() - t0) * 1000
    return wall, own_cpu_ms(pid) - cpu0


def remove_containers(args, sock: str, ids: list[str]) -> None:
    """Kill, delete the task of, and remove each container (what exists)."""
    for cid in ids:
        subprocess.run([args.ctr, "--address", sock, "tasks", "kill", "-s", "SIGKILL", cid],
                       capture_output=True, timeout=60)
    for cid in ids:
        deadline = time.monotonic() + 30
        while True:  # the kill is asynchronous: rm fails until the task has stopped
            r = subprocess.run([args.ctr, "--address", sock, "tasks", "rm", cid], capture_output=True, timeout=60)
            if r.returncode == 0 or b"not found" in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        subprocess.run([args.ctr, "--address", sock, "containers", "rm", cid], capture_output=True, timeout=60)


def busy_rss(args, sock: str, pid: int, image: str, prefix: str) -> float:
    """The daemon's RSS with --containers `sleep 300` containers running; they are removed after."""
    ids = [f"{prefix}-{i}" for i in range(args.containers)]
    try:
        for cid in ids:
            ctr(args, sock, "run", "-d", image, cid, "/bin/sleep", "300")
        running = ctr(args, sock, "tasks", "ls").stdout.decode().split().count("RUNNING")
        if running < args.containers:
            raise RuntimeError(f"only {running} of {args.containers} tasks are RUNNING")
        time.sleep(args.settle)
        return rss_mib(pid)
    finally:
        remove_containers(args, sock, ids)


def breakdown_once(sock: str, image: str, cid: str) -> dict[str, float]:
    """ctr run --rm's steps with pycontainerd's client library, each timed (ms)."""
    from pycontainerd.client.client import Client
    from pycontainerd.client.containers import create_container, delete_container
    from pycontainerd.client.tasks import new_task

    times = {}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with Client(address=sock, namespace="default") as client:
            t = time.perf_counter()

            def lap(step: str) -> None:
                nonlocal t
                now = time.perf_counter()
                times[step] = (now - t) * 1000
                t = now
            container = create_container(client, cid, image, ["/bin/true"])
            lap("container create")
            task = new_task(client, container, stdout=devnull, stderr=devnull)
            lap("task create")
            task.watch()
            task.start()
            lap("start")
            status = task.wait()
            lap("wait")
            task.delete()
            lap("task delete")
            delete_container(client, cid)
            lap("container delete")
            if status.exit_status != 0:
                raise RuntimeError(f"/bin/true exited {status.exit_status}")
    finally:
        os.close(devnull)
    return times


def _workload(args, daemons: dict, d: str, tag: str) -> dict:
    """Everything measured, both daemons up: see the module's docstring."""
    from busybox_image import NAME, write_busybox_layout

    samples = {k: {"run_ms": [], "cpu_ms": []} for k in KINDS}
    steps = {k: {s: [] for s in STEPS} for k in KINDS}
    tar = write_busybox_layout(os.path.join(d, "busybox.tar"))
    for sock, _ in daemons.values():
        ctr(args, sock, "images", "import", tar, timeout=120)
    for kind, (sock, pid) in daemons.items():  # one unmeasured run each: first-use imports and caches
        run_rm(args, sock, pid, NAME, f"{tag}-warm-{kind[:3]}")
    for i in range(args.runs):
        for kind, (sock, pid) in daemons.items():
            wall, cpu = run_rm(args, sock, pid, NAME, f"{tag}-{kind[:3]}-{i}")
            samples[kind]["run_ms"].append(wall)
            samples[kind]["cpu_ms"].append(cpu)
            print(f"run {i + 1}/{args.runs} {kind:12} run --rm {wall:7.1f} ms  daemon CPU {cpu:6.1f} ms",
                  file=sys.stderr)
    for i in range(args.breakdown_runs):
        for kind, (sock, _) in daemons.items():
            for step, ms in breakdown_once(sock, NAME, f"{tag}-steps-{kind[:3]}-{i}").items():
                steps[kind][step].append(ms)
    time.sleep(args.settle)
    idle = {kind: rss_mib(pid) for kind, (_, pid) in daemons.items()}
    busy = {}
    for kind, (sock, pid) in daemons.items():
        busy[kind] = busy_rss(args, sock, pid, NAME, f"{tag}-busy-{kind[:3]}")
        print(f"{kind:12} RSS idle {idle[kind]:6.1f} MiB, with {args.containers} containers "
              f"{busy[kind]:6.1f} MiB", file=sys.stderr)
    return {"samples": samples, "steps": steps, "idle": idle, "busy": busy,
            "left": {kind: ctr(args, sock, "containers", "ls", "-q").stdout.decode().split()
                     for kind, (sock, _) in daemons.items()},
            "versions": {kind: ctr(args, sock, "version").stdout.decode().split("Server:", 1)[-1].split()[1]
                         for kind, (sock, _) in daemons.items()}}


def measure(args) -> dict:
    """Start both daemons, measure, stop them; the results as a dict (what --json prints)."""
    binaries = {"pycontainerd": args.pycontainerd, "containerd": args.containerd}
    args.containerd_disable_cri = not args.containerd_cri  # startup.config_text's switch
    tag = f"b{os.getpid()}"
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-run-image-", dir="/dev/shm") as d, \
            startup.running("pycontainerd", binaries["pycontainerd"], args) as (psock, pproc), \
            startup.running("containerd", binaries["containerd"], args) as (csock, cproc):
        daemons = {"pycontainerd": (psock, pproc.pid), "containerd": (csock, cproc.pid)}
        try:
            w = _workload(args, daemons, d, tag)
        finally:  # after a failure too: no container of ours outlives its daemon (its shim would)
            for sock, _ in daemons.values():
                listed = subprocess.run([args.ctr, "--address", sock, "containers", "ls", "-q"],
                                        capture_output=True, timeout=60).stdout.decode().split()
                remove_containers(args, sock, [c for c in listed if c.startswith(tag)])
    samples = w["samples"]
    med = {k: {"run_ms": statistics.median(v["run_ms"]), "cpu_ms": statistics.mean(v["cpu_ms"]),
               "idle_rss_mib": w["idle"][k], "busy_rss_mib": w["busy"][k]} for k, v in samples.items()}
    rows = []
    labels = {"run_ms": ("`ctr run --rm IMAGE ID /bin/true`", "ms"), "idle_rss_mib": ("idle RSS", "MiB"),
              "busy_rss_mib": (f"RSS with {args.containers} containers running", "MiB")}
    for key, target in TARGETS.items():
        ratio = med["pycontainerd"][key] / med["containerd"][key]
        rows.append({"metric": key, "label": labels[key][0], "unit": labels[key][1],
                     "pycontainerd": med["pycontainerd"][key], "containerd": med["containerd"][key],
                     "ratio": ratio, "target": target, "pass": ratio <= target})
    return {
        "load_before": load_before, "load_after": loadavg(),
        "runs": args.runs, "containers": args.containers, "breakdown_runs": args.breakdown_runs,
        "containerd_cri": args.containerd_cri, "results": rows,
        "daemon_cpu_ms": {k: med[k]["cpu_ms"] for k in KINDS},
        "steps_ms": {k: {s: statistics.median(v) for s, v in w["steps"][k].items() if v} for k in KINDS},
        "id_prefix": tag, "leftover_containers": w["left"], "versions": w["versions"], "samples": samples,
        "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"}


def markdown(r: dict) -> str:
    out = ["| metric | pycontainerd | containerd | ratio | target | result |",
           "|---|---:|---:|---:|---:|:---:|"]
    for row in r["results"]:
        out.append(f"| {row['label']} | {row['pycontainerd']:.1f} {row['unit']} | {row['containerd']:.1f} "
                   f"{row['unit']} | {row['ratio']:.2f}x | ≤ {row['target']:g}x | "
                   f"{'PASS' if row['pass'] else 'MISS'} |")
    cri = "with CRI" if r["containerd_cri"] else "without CRI"
    out += ["", f"Medians of {r['runs']} alternating runs per daemon, both daemons up at once, roots on "
            f"/dev/shm; busybox-static image; RSS of the daemon's process alone, after the runs and with "
            f"{r['containers']} `sleep 300` containers. pycontainerd {r['versions']['pycontainerd']}, containerd "
            f"{r['versions']['containerd']} {cri}; {r['machine']}; load average {r['load_before']} before, "
            f"{r['load_after']} after."]
    if r["steps_ms"]["pycontainerd"]:
        out += ["", f"Where one run --rm goes (pycontainerd's client library doing ctr's steps, medians of "
                f"{r['breakdown_runs']} per daemon, ms):", "",
                "| step | pycontainerd | containerd | difference |", "|---|---:|---:|---:|"]
        p, c = r["steps_ms"]["pycontainerd"], r["steps_ms"]["containerd"]
        for s in STEPS:
            out.append(f"| {s} | {p[s]:.1f} | {c[s]:.1f} | {p[s] - c[s]:+.1f} |")
        out.append(f"| total | {sum(p.values()):.1f} | {sum(c.values()):.1f} | "
                   f"{sum(p.values()) - sum(c.values()):+.1f} |")
        cpu = r["daemon_cpu_ms"]
        out += ["", f"The daemon's own CPU per `ctr run --rm` (its process, not the shim or runc; the mean, "
                f"/proc counts in 10 ms ticks): pycontainerd {cpu['pycontainerd']:.0f} ms, "
                f"containerd {cpu['containerd']:.0f} ms."]
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=15, help="run --rm runs per daemon (default 15)")
    p.add_argument("--containers", type=int, default=20, help="containers running for the busy RSS (default 20)")
    p.add_argument("--breakdown-runs", type=int, default=5,
                   help="client-library runs per daemon for the per-step breakdown (default 5; 0: none)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before each RSS reading (default 2)")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--ctr", default="/usr/bin/ctr")
    p.add_argument("--containerd-cri", action="store_true", help="start containerd with its CRI plugin")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown tables")
    args = p.parse_args(argv)
    for path in (args.pycontainerd, args.containerd, args.ctr):
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (run `make install`, or pass its path)")
    try:
        r = measure(args)
    except KeyboardInterrupt:
        print("interrupted; containers removed, daemons stopped and temporary directories removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(r, indent=2, ensure_ascii=False) if args.json else markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
