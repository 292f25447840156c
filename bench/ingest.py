#!/usr/bin/env python3
"""Ingest of a large blob with the real `ctr content ingest`: pycontainerd against the real containerd.

One random blob (default 512 MiB) is written once to /dev/shm. For each run,
each daemon is started the way bench/startup.py starts it (fresh temporary
root and state on /dev/shm, its own socket, stopped by PID), then timed:

    ctr --address SOCK content ingest --expected-digest D --expected-size N REF < blob

ctr streams the file in 1 MiB WRITE messages, each answered before the next
(containerd's remote writer), and commits with the digest and size checked
server-side. The blob is then checked to be listed. Runs alternate between
the daemons so machine noise hits both; the medians and their ratio are
reported against the target (pycontainerd <= 0.8x containerd's time).
The CPU time of the daemon and of ctr (user + system) is reported beside
the wall time: on a shared machine it says more about the work than the
clock. A benchmark, not a test: it exits 0 on MISS.

    .venv/bin/python bench/ingest.py [--runs 5] [--size-mib 512] [--json]
"""
from __future__ import annotations

import argparse, hashlib, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402  (the daemon helpers: config_text, wait_ready, stop)
from pull import cpu_seconds, with_daemon  # noqa: E402  (a daemon whose PID the workload gets)

REPO = startup.REPO
TARGET = 0.8


def make_blob(size: int) -> tuple[str, str]:
    d = tempfile.mkdtemp(prefix="bench-blob-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(d, "blob")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return path, "sha256:" + h.hexdigest()


def ingest(ctr: str, sock: str, pid: int, blob: str, dgst: str, size: int, ref: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of daemon + ctr) of one ingest."""
    import resource

    with open(blob, "rb") as stdin:
        daemon0 = cpu_seconds(pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run([ctr, "--address", sock, "content", "ingest", "--expected-digest", dgst,
                            "--expected-size", str(size), ref], stdin=stdin, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_seconds(pid) - daemon0 + (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if r.returncode:
        raise RuntimeError(f"ctr content ingest failed: {r.stderr.decode(errors='replace').strip()}")
    listed = subprocess.run([ctr, "--address", sock, "content", "ls", "-q"], capture_output=True, timeout=60)
    if dgst.encode() not in listed.stdout:
        raise RuntimeError(f"{dgst} is not listed after the ingest")
    return elapsed, cpu


def run_once(kind: str, binary: str, args, blob: str, dgst: str, size: int, i: int) -> tuple[float, float]:
    return with_daemon(kind, binary, args, dict(os.environ),
                       lambda sock, pid: ingest(args.ctr, sock, pid, blob, dgst, size, f"bench-{i}"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per daemon (default 5)")
    p.add_argument("--size-mib", type=int, default=512, help="blob size in MiB (default 512)")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--ctr", default="/usr/bin/ctr")
    p.add_argument("--containerd-disable-cri", action="store_true", help="start containerd without its CRI plugin")
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = p.parse_args(argv)
    binaries = {"pycontainerd": args.pycontainerd, "containerd": args.containerd}
    for path in [*binaries.values(), args.ctr]:
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (run `make install`, or pass its path)")
    size = args.size_mib << 20
    blob, dgst = make_blob(size)
    samples: dict[str, list[float]] = {k: [] for k in startup.KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in startup.KINDS}
    try:
        for i in range(args.runs):
            for kind in startup.KINDS:
                s, c = run_once(kind, binaries[kind], args, blob, dgst, size, i)
                samples[kind].append(s)
                cpu[kind].append(c)
                print(f"run {i + 1}/{args.runs} {kind:12} {s:6.3f} s  ({args.size_mib / s:6.1f} MiB/s)  "
                      f"CPU {c:6.2f} s  load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; daemons stopped and temporary directories removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(os.path.dirname(blob), ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = med["pycontainerd"] / med["containerd"]
    result = {"size_mib": args.size_mib, "runs": args.runs, "median_s": med, "ratio": ratio, "target": TARGET,
              "pass": ratio <= TARGET, "samples": samples, "median_cpu_s": med_cpu, "cpu_samples": cpu,
              "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    cri = "CRI plugin disabled" if args.containerd_disable_cri else "all default plugins"
    print("| metric | pycontainerd | containerd | ratio | target | result | CPU (daemon + ctr) |")
    print("|---|---:|---:|---:|---:|:---:|---:|")
    print(f"| `ctr content ingest` of {args.size_mib} MiB | {med['pycontainerd']:.2f} s "
          f"({args.size_mib / med['pycontainerd']:.0f} MiB/s) | {med['containerd']:.2f} s "
          f"({args.size_mib / med['containerd']:.0f} MiB/s) | {ratio:.2f}x | ≤ {TARGET:g}x | "
          f"{'PASS' if ratio <= TARGET else 'MISS'} | "
          f"{med_cpu['pycontainerd']:.2f} s vs {med_cpu['containerd']:.2f} s |")
    print()
    print(f"Medians of {args.runs} alternating run(s) per daemon; expected digest and size given to ctr; "
          f"roots on /dev/shm; containerd with {cri}; {result['machine']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
