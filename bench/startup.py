#!/usr/bin/env python3
"""Startup, request latency and idle memory: pycontainerd against the real containerd.

pycontainerd exists to be containerd's architecture in Python, usable by the
real `ctr`. Python costs something at startup and in memory; this measures how
much, against Debian's containerd 1.6 started the same way, so the README can
state numbers instead of impressions. For each daemon, several runs, alternated
(pycontainerd, containerd, pycontainerd, ...) so machine noise hits both:

  ready       wall time from exec to the first answered gRPC Version call.
              The socket is stat()ed every --poll-ms and, once it exists, a
              fresh channel tries Version; a connection failure just means retry.
  ctr         wall time of the real `ctr --address SOCK plugins ls` (output
              discarded), --ctr-calls times per run. It includes ctr's own
              startup, which is the latency a user of ctr actually sees.
  idle RSS    VmRSS of the daemon's own process (not children) from
              /proc/PID/status, after the ctr calls and --idle seconds idle.

Each run uses a fresh temporary directory on /dev/shm for root, state, sockets
and config, removed afterwards, so no run sees another's data or the system's
containerd. Reported: the median of each metric, the ratio pycontainerd/
containerd, and whether it meets the target (ready <= 3x, ctr <= 2x, RSS <= 1.2x).
containerd runs with all its default plugins, CRI included, unless
--containerd-disable-cri. A benchmark, not a test: it exits 0 on MISS.

    .venv/bin/python bench/startup.py [--runs 7] [--json]
"""
from __future__ import annotations

import argparse, contextlib, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from pycontainerd.api.services.version.v1 import version_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
KINDS = ("pycontainerd", "containerd")
# key, label, unit, target ratio (pycontainerd / containerd must be <= target)
METRICS = (("ready_ms", "ready: exec → first Version answer", "ms", 3.0),
           ("ctr_ms", "`ctr plugins ls` latency", "ms", 2.0),
           ("rss_mib", "idle RSS", "MiB", 1.2))
# a channel of its own per attempt, so no reconnect backoff is carried between attempts
CHANNEL_OPTS = [("grpc.use_local_subchannel_pool", 1)]


def q(s: str) -> str:  # a TOML basic string (JSON escaping is valid TOML for these paths)
    return json.dumps(str(s))


def config_text(kind: str, tmp: str, sock: str, args) -> str:
    lines = ["version = 2", f"root = {q(tmp + '/root')}", f"state = {q(tmp + '/state')}"]
    if kind == "containerd":
        if args.containerd_disable_cri:
            lines.append('disabled_plugins = ["io.containerd.grpc.v1.cri"]')
        lines += ["[ttrpc]", f"address = {q(tmp + '/ttrpc.sock')}", "[debug]", 'address = ""',
                  '[plugins."io.containerd.internal.v1.opt"]', f"path = {q(tmp + '/opt')}"]
        if not args.containerd_disable_cri:  # keep CRI off the host's /etc/cni (it mkdirs conf_dir)
            lines += ['[plugins."io.containerd.grpc.v1.cri".cni]',
                      f"conf_dir = {q(tmp + '/cni/net.d')}", f"bin_dir = {q(tmp + '/cni/bin')}"]
    lines += ["[grpc]", f"address = {q(sock)}"]
    return "\n".join(lines) + "\n"


def wait_ready(proc: subprocess.Popen, sock: str, timeout: float, poll: float):
    deadline, last = time.perf_counter() + timeout, "the socket never appeared"
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before answering Version")
        if os.path.exists(sock):
            with grpc.insecure_channel("unix:" + sock, options=CHANNEL_OPTS) as channel:
                try:
                    return version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=2.0)
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    last = f"{exc.code().name}: {exc.details()}"
        time.sleep(poll)
    raise TimeoutError(f"no Version answer within {timeout:.0f} s ({last})")


def time_ctr(ctr: str, sock: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([ctr, "--address", sock, "plugins", "ls"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    elapsed = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"ctr plugins ls failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return elapsed * 1000


def proc_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def children(pid: int) -> dict[int, str]:
    """Child PIDs mapped to their start time (to recognise them, not a reused PID, later)."""
    kids = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                kids[int(child)] = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except OSError:
            pass
    return kids


def stop(proc: subprocess.Popen, kids: dict[int, str]) -> None:
    """SIGTERM by PID, SIGKILL after 10 s; then any child it left behind (none expected)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid, started in kids.items():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                print(f"warning: killing leftover child {pid}", file=sys.stderr)
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass


def run_once(kind: str, binary, args, ctr_calls: int | None = None) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sock, cfg, logpath = f"{tmp}/grpc.sock", f"{tmp}/config.toml", f"{tmp}/daemon.log"
    Path(cfg).write_text(config_text(kind, tmp, sock, args))
    proc, kids = None, {}
    try:
        with open(logpath, "wb") as log:
            t0 = time.perf_counter()
            argv = binary if isinstance(binary, list) else [binary]
            proc = subprocess.Popen([*argv, "--config", cfg], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # Ctrl-C is ours to handle
            try:
                version = wait_ready(proc, sock, args.timeout, args.poll_ms / 1000)
                ready_ms = (time.perf_counter() - t0) * 1000
                calls = args.ctr_calls if ctr_calls is None else ctr_calls
                ctr_ms = [time_ctr(args.ctr, sock) for _ in range(calls)]
                time.sleep(args.idle)
                kids = children(proc.pid)
                rss_mib = int(proc_field(proc.pid, "VmRSS").split()[0]) / 1024
            except Exception as exc:
                tail = "".join(Path(logpath).read_text(errors="replace").splitlines(True)[-20:])
                raise RuntimeError(f"{kind}: {exc}\n--- last lines of its log ---\n{tail}") from exc
        return {"ready_ms": ready_ms, "ctr_ms": ctr_ms, "rss_mib": rss_mib, "children": len(kids),
                "version": f"{version.version} ({version.revision})" if version.revision else version.version}
    finally:
        if proc is not None:
            stop(proc, kids)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def running(kind: str, binary: str, args, env: dict | None = None):
    """A fresh daemon of `kind` (own temp root, state and socket on /dev/shm)
    while the block runs: yields (socket, Popen) once it answers Version;
    afterwards stopped by PID and its files removed. A failure in the block
    is raised with the tail of the daemon's log."""
    tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sock, cfg = f"{tmp}/grpc.sock", f"{tmp}/config.toml"
    Path(cfg).write_text(config_text(kind, tmp, sock, args))
    proc = None
    try:
        with open(f"{tmp}/daemon.log", "wb") as log:
            proc = subprocess.Popen([binary, "--config", cfg], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
            wait_ready(proc, sock, 60, 0.01)
            yield sock, proc
    except Exception as exc:
        tail = Path(f"{tmp}/daemon.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind}: {exc}\n--- its log ---\n{tail}") from exc
    finally:
        if proc is not None:
            stop(proc, {})
        shutil.rmtree(tmp, ignore_errors=True)


def with_daemon(kind: str, binary: str, args, workload):
    """Start a fresh daemon of `kind` (see running()), run `workload(sock)`
    once it answers, stop it. The other benchmarks measure their work through this."""
    with running(kind, binary, args) as (sock, _proc):
        return workload(sock)


def summarize(samples: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for key, label, unit, target in METRICS:
        med = {}
        for kind, runs in samples.items():
            values = [v for r in runs for v in (r[key] if isinstance(r[key], list) else [r[key]])]
            med[kind] = statistics.median(values) if values else None
        ratio = med["pycontainerd"] / med["containerd"] if None not in med.values() else None
        rows.append({"metric": key, "label": label, "unit": unit, **med, "ratio": ratio, "target": target,
                     "pass": None if ratio is None else ratio <= target})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    fmt = lambda v, unit: "–" if v is None else f"{v:.1f} {unit}"
    out = ["| metric | pycontainerd | containerd | ratio | target | result |",
           "|---|---:|---:|---:|---:|:---:|"]
    for r in rows:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        result = "–" if r["pass"] is None else ("PASS" if r["pass"] else "MISS")
        out.append(f"| {r['label']} | {fmt(r['pycontainerd'], r['unit'])} | {fmt(r['containerd'], r['unit'])} "
                   f"| {ratio} | ≤ {r['target']:g}x | {result} |")
    cri = "CRI plugin disabled" if meta["containerd_cri_disabled"] else "all default plugins, CRI included"
    out += ["", f"Medians of {meta['runs']} alternating run(s) per daemon ({meta['ctr_calls']} `ctr plugins ls` "
            f"per run; RSS after {meta['idle_s']:g} s idle). pycontainerd {meta['versions'].get('pycontainerd', '–')}; "
            f"containerd {meta['versions'].get('containerd', '–')} with {cri}. Root and state on /dev/shm; "
            f"{meta['machine']}."]
    if meta.get("floor_ready_ms") and rows[0]["containerd"]:
        f = meta["floor_ready_ms"]
        out += ["", f"Reference: a bare asyncio + grpc.aio server answering Version and nothing else "
                f"(bench/floor_server.py) is ready in {f:.1f} ms, {f / rows[0]['containerd']:.2f}x containerd."]
    if meta.get("floor_rss_mib") and rows[2]["containerd"]:
        c = rows[2]["containerd"]
        b, a = meta["floor_rss_mib"], meta["floor_api_rss_mib"]
        out += ["", f"Its idle RSS: {b:.1f} MiB, {b / c:.2f}x containerd; with every gRPC service pycontainerd "
                f"serves registered and the event and type messages loaded (floor_server.py --api), "
                f"{a:.1f} MiB, {a / c:.2f}x containerd."]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="runs per daemon (default 7)")
    p.add_argument("--ctr-calls", type=int, default=15, help="`ctr plugins ls` calls per run (default 15)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS (default 1)")
    p.add_argument("--poll-ms", type=float, default=2.0, help="readiness poll interval (default 2 ms)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a daemon to answer")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--ctr", default="/usr/bin/ctr")
    p.add_argument("--containerd-disable-cri", action="store_true", help="start containerd without its CRI plugin")
    p.add_argument("--only", choices=KINDS, help="measure one daemon alone (no ratios)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = p.parse_args(argv)
    binaries = {"pycontainerd": args.pycontainerd, "containerd": args.containerd}
    kinds = [args.only] if args.only else list(KINDS)
    for path in [binaries[k] for k in kinds] + [args.ctr]:
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (run `make install`, or pass its path)")
    with grpc.insecure_channel("unix:/nonexistent/warm-up.sock") as channel:  # load gRPC before timing
        try:
            version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=0.2)
        except grpc.RpcError:
            pass
    samples: dict[str, list[dict]] = {k: [] for k in KINDS}
    floor: list[float] = []
    floor_rss: dict[str, list[float]] = {"bare": [], "api": []}
    floor_cmd = [sys.executable, str(REPO / "bench" / "floor_server.py")]
    try:
        for i in range(args.runs):
            if not args.only:  # the runtime's floor, as a reference for the ready and RSS rows
                bare = run_once("python-floor", floor_cmd, args, ctr_calls=0)
                floor.append(bare["ready_ms"])
                floor_rss["bare"].append(bare["rss_mib"])
                floor_rss["api"].append(run_once("python-floor", [*floor_cmd, "--api"], args, ctr_calls=0)["rss_mib"])
            for kind in kinds:
                r = run_once(kind, binaries[kind], args)
                samples[kind].append(r)
                print(f"run {i + 1}/{args.runs} {kind:12} ready {r['ready_ms']:7.1f} ms  ctr "
                      f"{statistics.median(r['ctr_ms']):6.1f} ms  rss {r['rss_mib']:6.1f} MiB", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; daemons stopped and temporary directories removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = {"runs": args.runs, "ctr_calls": args.ctr_calls, "idle_s": args.idle,
            "containerd_cri_disabled": args.containerd_disable_cri,
            "versions": {k: samples[k][0]["version"] for k in kinds},
            "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs",
            "floor_ready_ms": statistics.median(floor) if floor else None,
            "floor_rss_mib": statistics.median(floor_rss["bare"]) if floor else None,
            "floor_api_rss_mib": statistics.median(floor_rss["api"]) if floor else None}
    rows = summarize(samples)
    if args.json:
        print(json.dumps({"meta": meta, "results": rows, "samples": samples}, indent=2, ensure_ascii=False))
    else:
        print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
