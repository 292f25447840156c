#!/usr/bin/env python3
"""Snapshot prepare+commit through the gRPC API: pycontainerd against the real containerd.

Each daemon is started the way bench/startup.py starts it (fresh temporary
root, state and socket on /dev/shm, stopped by PID), then one client makes
N snapshots in a chain with the overlayfs snapshotter: Prepare(k<i>,
parent c<i-1>) then Commit(c<i>, k<i>), each call waited for, labelled
containerd.io/gc.root so no collector interferes. Several runs alternate
the daemons; the median wall time per daemon and the ratio are reported
against the target (pycontainerd ≤ 2x containerd). A benchmark, not a
test: it exits 0 on MISS.

    .venv/bin/python bench/snapshots.py [--count 200] [--runs 3] [--json]
"""
from __future__ import annotations

import argparse, json, statistics, sys, time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402  (the daemon helpers: config_text, wait_ready, stop)

from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb, snapshots_pb2_grpc as pb_grpc  # noqa: E402

REPO = startup.REPO
TARGET = 2.0
MD = (("namespace", "bench"),)


def workload(sock: str, count: int, snapshotter: str) -> float:
    with grpc.insecure_channel("unix:" + sock) as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        labels = {"containerd.io/gc.root": "bench"}
        md = (("containerd-namespace", "bench"),)
        t0 = time.perf_counter()
        parent = ""
        for i in range(count):
            stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=snapshotter, key=f"k{i}", parent=parent,
                                                   labels=labels), metadata=md, timeout=30)
            stub.Commit(pb.CommitSnapshotRequest(snapshotter=snapshotter, name=f"c{i}", key=f"k{i}",
                                                 labels=labels), metadata=md, timeout=30)
            parent = f"c{i}"
        return time.perf_counter() - t0


def run_once(kind: str, binary: str, args) -> float:
    return startup.with_daemon(kind, binary, args, lambda sock: workload(sock, args.count, args.snapshotter))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=200, help="snapshots prepared and committed per run")
    p.add_argument("--runs", type=int, default=3, help="alternating runs per daemon")
    p.add_argument("--snapshotter", default="overlayfs")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.containerd_disable_cri = True  # config_text's switch: CRI has nothing to do with snapshots
    times: dict[str, list[float]] = {"pycontainerd": [], "containerd": []}
    try:
        for i in range(args.runs):
            for kind, binary in (("pycontainerd", args.pycontainerd), ("containerd", args.containerd)):
                t = run_once(kind, binary, args)
                times[kind].append(t)
                print(f"run {i + 1}/{args.runs} {kind:12} {t * 1000:8.1f} ms", file=sys.stderr)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratio = med["pycontainerd"] / med["containerd"]
    if args.json:
        print(json.dumps({"count": args.count, "runs": args.runs, "median_ms": med, "ratio": ratio,
                          "target": TARGET, "samples_s": times}, indent=2))
        return 0
    print("| metric | pycontainerd | containerd | ratio | target | result |")
    print("|---|---:|---:|---:|---:|:---:|")
    print(f"| {args.count} × Prepare+Commit ({args.snapshotter}, gRPC) | {med['pycontainerd']:.1f} ms | "
          f"{med['containerd']:.1f} ms | {ratio:.2f}x | ≤ {TARGET:g}x | {'PASS' if ratio <= TARGET else 'MISS'} |")
    print(f"\nMedians of {args.runs} alternating run(s) per daemon; one client, calls in sequence, a chain of "
          f"{args.count} layers; roots on /dev/shm; containerd without CRI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
