#!/usr/bin/env python3
"""Does memory settle after a burst? pycontainerd against the real containerd.

Each daemon is started the way bench/startup.py starts it (fresh temporary
root, state and socket on /dev/shm, stopped by PID). After it has idled
`--idle` seconds its RSS is the start. Then a burst: `--clients` clients at
once, each on its own connection, each ingesting `--blobs` blobs of
`--blob-mib` MiB (1 MiB WRITE messages, committed with the digest checked)
and making a chain of `--snapshots` overlayfs snapshots (Prepare, Commit),
everything labelled containerd.io/gc.root. The peak is the kernel's
high-water mark (VmHWM). The daemon then idles `--settle` seconds (with
`--clean-up`, after the burst's content and snapshots are removed), and its
RSS is the settled value.
Printed: start, peak, settled (MiB) and settled/start per daemon, against
the target settled <= 1.5x start. A benchmark, not a test: it exits 0 on MISS.

    .venv/bin/python bench/memory_settle.py [--clients 20] [--settle 5] [--json]
"""
from __future__ import annotations

import argparse, hashlib, json, os, platform, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402  (the daemon helpers: config_text, wait_ready, stop, proc_field)

from pycontainerd.api.services.content.v1 import content_pb2 as cpb, content_pb2_grpc as cpb_grpc  # noqa: E402
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as spb, snapshots_pb2_grpc as spb_grpc  # noqa: E402

REPO = startup.REPO
TARGET = 1.5
ROOT_LABEL = {"containerd.io/gc.root": "bench"}


def kib(pid: int, field: str) -> int:
    return int(startup.proc_field(pid, field).split()[0])


def client(sock: str, n: int, args, errors: list) -> None:
    md = (("containerd-namespace", f"bench{n % 4}"),)
    try:
        with grpc.insecure_channel("unix:" + sock) as ch:
            content, snaps = cpb_grpc.ContentStub(ch), spb_grpc.SnapshotsStub(ch)
            for b in range(args.blobs):
                data = os.urandom(args.blob_mib << 20)
                dgst = "sha256:" + hashlib.sha256(data).hexdigest()
                ref = f"c{n}-b{b}"
                reqs = [cpb.WriteContentRequest(action=cpb.STAT, ref=ref, total=len(data), expected=dgst)]
                for off in range(0, len(data), 1 << 20):
                    reqs.append(cpb.WriteContentRequest(action=cpb.WRITE, ref=ref, offset=off,
                                                        data=data[off:off + (1 << 20)]))
                reqs.append(cpb.WriteContentRequest(action=cpb.COMMIT, ref=ref, offset=len(data), total=len(data),
                                                    expected=dgst, labels=ROOT_LABEL))
                list(content.Write(iter(reqs), metadata=md, timeout=120))
            parent = ""
            for i in range(args.snapshots):
                key, name = f"k{n}-{i}", f"s{n}-{i}"
                snaps.Prepare(spb.PrepareSnapshotRequest(snapshotter="overlayfs", key=key, parent=parent,
                                                         labels=ROOT_LABEL), metadata=md, timeout=60)
                snaps.Commit(spb.CommitSnapshotRequest(snapshotter="overlayfs", name=name, key=key,
                                                       labels=ROOT_LABEL), metadata=md, timeout=60)
                parent = name
    except Exception as exc:  # reported after the burst
        errors.append(f"client {n}: {exc}")


def clean_up(sock: str, args) -> None:
    """Remove what the burst made (children before parents), so the daemon
    settles with the store it started with."""
    with grpc.insecure_channel("unix:" + sock) as ch:
        content, snaps = cpb_grpc.ContentStub(ch), spb_grpc.SnapshotsStub(ch)
        for ns in range(min(4, args.clients)):
            md = (("containerd-namespace", f"bench{ns}"),)
            for resp in content.List(cpb.ListContentRequest(), metadata=md, timeout=60):
                for info in resp.info:
                    content.Delete(cpb.DeleteContentRequest(digest=info.digest), metadata=md, timeout=60)
            for n in range(ns, args.clients, 4):
                for i in reversed(range(args.snapshots)):
                    snaps.Remove(spb.RemoveSnapshotRequest(snapshotter="overlayfs", key=f"s{n}-{i}"),
                                 metadata=md, timeout=60)


def measure(kind: str, binary: str, args) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sock, cfg = f"{tmp}/grpc.sock", f"{tmp}/config.toml"
    Path(cfg).write_text(startup.config_text(kind, tmp, sock, args))
    proc = None
    try:
        with open(f"{tmp}/daemon.log", "wb") as log:
            proc = subprocess.Popen([binary, "--config", cfg], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            startup.wait_ready(proc, sock, 60, 0.01)
            time.sleep(args.idle)
            start = kib(proc.pid, "VmRSS")
            errors: list[str] = []
            threads = [threading.Thread(target=client, args=(sock, n, args, errors)) for n in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            burst = time.perf_counter() - t0
            if errors:
                raise RuntimeError("; ".join(errors[:3]))
            peak = kib(proc.pid, "VmHWM")
            if args.clean_up:
                clean_up(sock, args)
            time.sleep(args.settle)
            settled = kib(proc.pid, "VmRSS")
            threads_now = int(startup.proc_field(proc.pid, "Threads"))
    except Exception as exc:
        tail = Path(f"{tmp}/daemon.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind}: {exc}\n--- its log ---\n{tail}") from exc
    finally:
        if proc is not None:
            startup.stop(proc, {})
        shutil.rmtree(tmp, ignore_errors=True)
    return {"kind": kind, "start_mib": start / 1024, "peak_mib": peak / 1024, "settled_mib": settled / 1024,
            "ratio": settled / start, "burst_s": burst, "threads_after": threads_now}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--blobs", type=int, default=4, help="blobs per client (default 4)")
    p.add_argument("--blob-mib", type=int, default=4, help="blob size in MiB (default 4)")
    p.add_argument("--snapshots", type=int, default=10, help="snapshots per client (default 10)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds idle before the start RSS (default 1)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds idle before the settled RSS (default 5)")
    p.add_argument("--clean-up", action="store_true", help="remove what the burst made before settling")
    p.add_argument("--only", choices=startup.KINDS, help="measure one daemon only")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--containerd-disable-cri", action="store_true", help="start containerd without its CRI plugin")
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = p.parse_args(argv)
    binaries = {"pycontainerd": args.pycontainerd, "containerd": args.containerd}
    kinds = [args.only] if args.only else list(startup.KINDS)
    rows = []
    for kind in kinds:
        print(f"{kind}: burst of {args.clients} clients ...", file=sys.stderr, flush=True)
        rows.append(measure(kind, binaries[kind], args))
    if args.json:
        print(json.dumps({"rows": rows, "target": TARGET, "args": vars(args)}, indent=2))
        return 0
    print("| daemon | start RSS | peak RSS | settled RSS | settled/start | target | result |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for r in rows:
        ok = "ok" if r["ratio"] <= TARGET else "MISS"
        print(f"| {r['kind']} | {r['start_mib']:.1f} MiB | {r['peak_mib']:.1f} MiB | {r['settled_mib']:.1f} MiB "
              f"| {r['ratio']:.2f}x | ≤ {TARGET}x | {ok} |")
    print(f"\n{args.clients} clients x ({args.blobs} blobs of {args.blob_mib} MiB + {args.snapshots} overlayfs "
          f"snapshots), settled after {args.settle:g} s; {os.cpu_count()} CPUs, Python {platform.python_version()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
