#!/usr/bin/env python3
"""Every benchmark of the project against a real containerd, in one table.

It runs the other scripts here, each with --json (so their logic lives in
one place: startup.py, snapshots.py, ingest.py, pull.py, run.py), and
gathers their medians into one Markdown table: ready time (and both
daemons' ready time as a multiple of bench/floor_server.py's bare grpc.aio
server), `ctr plugins ls`, idle RSS of a fresh daemon, content ingest,
snapshot prepare+commit, image pull (the real ctr and pyctr), `ctr run
--rm`, idle RSS after running containers and RSS with 20 containers
running; each with pycontainerd's figure, containerd's, the ratio and the
target. Each script's progress goes to stderr as it runs; the table goes to
stdout. By default the run counts are the ones the README's tables quote
(what `make bench` runs); --quick runs each once or a few times, with
smaller work, as a smoke test of the whole set. A benchmark, not a test: it
exits 0 on MISS, 1 when a script fails.

    .venv/bin/python bench/all.py [--quick] [--skip pull,...] [--json]
"""
from __future__ import annotations

import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PY = sys.executable

# name: (script, its arguments as the README quotes them, its arguments for --quick)
SCRIPTS = {
    "startup": ("startup.py", ["--runs", "11"], ["--runs", "1", "--ctr-calls", "3"]),
    "ingest": ("ingest.py", ["--runs", "5"], ["--runs", "1", "--size-mib", "64"]),
    "snapshots": ("snapshots.py", ["--runs", "5"], ["--runs", "1", "--count", "50"]),
    "pull": ("pull.py", ["--runs", "5"], ["--runs", "1"]),
    "run": ("run.py", ["--runs", "15"], ["--runs", "3", "--containers", "5", "--breakdown-runs", "0",
                                         "--settle", "0.5"]),
}


def run_script(name: str, quick: bool) -> dict:
    script, full, short = SCRIPTS[name]
    argv = [PY, str(BENCH / script), *(short if quick else full), "--json"]
    print(f"== {' '.join([script, *argv[2:]])}", file=sys.stderr)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=3600)
    if r.returncode:
        raise RuntimeError(f"{script} exited {r.returncode}")
    out = json.loads(r.stdout)
    out["_seconds"] = time.perf_counter() - t0
    return out


def row(label: str, unit: str, py: float, ctd: float, target: float | None, fmt: str = ".1f") -> dict:
    ratio = py / ctd
    return {"metric": label, "unit": unit, "pycontainerd": py, "containerd": ctd, "ratio": ratio,
            "target": target, "pass": None if target is None else ratio <= target, "fmt": fmt}


def rows_of(results: dict) -> tuple[list[dict], list[str]]:
    """The table's rows and its footnotes, from each script's JSON."""
    rows, notes = [], []
    if "startup" in results:
        s = results["startup"]
        by = {r["metric"]: r for r in s["results"]}
        r = by["ready_ms"]
        rows.append(row("ready: exec → first Version answer", "ms", r["pycontainerd"], r["containerd"], r["target"]))
        floor = s["meta"].get("floor_ready_ms")
        if floor:
            rows.append({"metric": "ready as a multiple of the bare grpc.aio floor "
                                   f"({floor:.1f} ms, bench/floor_server.py)",
                         "text": (f"{r['pycontainerd'] / floor:.2f}x floor", f"{r['containerd'] / floor:.2f}x floor")})
        r = by["ctr_ms"]
        rows.append(row("`ctr plugins ls`", "ms", r["pycontainerd"], r["containerd"], r["target"]))
        r = by["rss_mib"]
        rows.append(row("idle RSS, fresh daemon", "MiB", r["pycontainerd"], r["containerd"], r["target"]))
        floor = s["meta"].get("floor_api_rss_mib")
        if floor:
            rows.append({"metric": "idle RSS as a multiple of the grpc.aio floor serving the same API "
                                   f"({floor:.1f} MiB, bench/floor_server.py --api; bare: "
                                   f"{s['meta']['floor_rss_mib']:.1f} MiB)",
                         "text": (f"{r['pycontainerd'] / floor:.2f}x floor", f"{r['containerd'] / floor:.2f}x floor")})
        cri = "without CRI" if s["meta"]["containerd_cri_disabled"] else "with CRI"
        notes.append(f"startup.py: {s['meta']['runs']} run(s), containerd {cri}.")
    if "ingest" in results:
        s = results["ingest"]
        rows.append(row(f"`ctr content ingest`, {s['size_mib']} MiB", "s", s["median_s"]["pycontainerd"],
                        s["median_s"]["containerd"], s["target"], ".2f"))
        notes.append(f"ingest.py: {s['runs']} run(s), containerd with CRI.")
    if "snapshots" in results:
        s = results["snapshots"]
        rows.append(row(f"{s['count']} × snapshot Prepare+Commit (gRPC)", "ms", s["median_ms"]["pycontainerd"],
                        s["median_ms"]["containerd"], s["target"]))
        notes.append(f"snapshots.py: {s['runs']} run(s), containerd without CRI.")
    if "pull" in results:
        s = results["pull"]
        size = f"{s['layers']} layers, {s['compressed_mib']:.0f} MiB"
        rows.append(row(f"image pull + unpack ({size}), ctr", "s", s["median_s"]["c"], s["median_s"]["a"],
                        s["targets"]["c"], ".2f"))
        rows.append(row(f"image pull + unpack ({size}), pyctr against pycontainerd, ctr against containerd",
                        "s", s["median_s"]["b"], s["median_s"]["a"], s["targets"]["b"], ".2f"))
        unpigz = "with" if s["unpigz_on_containerd_path"] else "without"
        notes.append(f"pull.py: {s['runs']} run(s), containerd with CRI, {unpigz} unpigz on its PATH; CPU (daemon "
                     f"+ client) per pull: ctr → pycontainerd {s['median_cpu_s']['c']:.2f} s, pyctr → pycontainerd "
                     f"{s['median_cpu_s']['b']:.2f} s, ctr → containerd {s['median_cpu_s']['a']:.2f} s.")
    if "run" in results:
        s = results["run"]
        for r in s["results"]:
            label = {"run_ms": "`ctr run --rm IMAGE ID /bin/true`", "idle_rss_mib": "idle RSS, after running containers",
                     "busy_rss_mib": f"RSS with {s['containers']} containers running"}[r["metric"]]
            rows.append(row(label, r["unit"], r["pycontainerd"], r["containerd"], r["target"]))
        cpu = s["daemon_cpu_ms"]
        notes.append(f"run.py: {s['runs']} run(s), containerd without CRI; the daemon's own CPU per run --rm (mean): "
                     f"pycontainerd {cpu['pycontainerd']:.0f} ms, containerd {cpu['containerd']:.0f} ms.")
    return rows, notes


def markdown(rows: list[dict], notes: list[str], meta: dict) -> str:
    out = ["| metric | pycontainerd | containerd | ratio | target | result |", "|---|---:|---:|---:|---:|:---:|"]
    for r in rows:
        if "text" in r:
            out.append(f"| {r['metric']} | {r['text'][0]} | {r['text'][1]} | | | |")
            continue
        f, u = r["fmt"], r["unit"]
        target = "–" if r["target"] is None else f"≤ {r['target']:g}x"
        result = "" if r["pass"] is None else ("PASS" if r["pass"] else "MISS")
        out.append(f"| {r['metric']} | {r['pycontainerd']:{f}} {u} | {r['containerd']:{f}} {u} | "
                   f"{r['ratio']:.2f}x | {target} | {result} |")
    out += ["", f"Medians; roots on /dev/shm; {meta['machine']}; load average {meta['load_before']} before, "
            f"{meta['load_after']} after; {meta['seconds']:.0f} s in all{' (--quick)' if meta['quick'] else ''}.",
            *(f"- {n}" for n in notes)]
    return "\n".join(out)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="each benchmark once or a few times, smaller: a smoke test")
    p.add_argument("--skip", default="", help=f"comma-separated benchmarks to leave out ({', '.join(SCRIPTS)})")
    p.add_argument("--json", action="store_true", help="print JSON (every script's own JSON too) instead of the table")
    args = p.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SCRIPTS):
        p.error(f"unknown benchmark(s) {', '.join(sorted(skip - set(SCRIPTS)))}: they are {', '.join(SCRIPTS)}")
    meta = {"quick": args.quick, "load_before": loadavg(),
            "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"}
    t0 = time.perf_counter()
    results = {}
    try:
        for name in SCRIPTS:
            if name not in skip:
                results[name] = run_script(name, args.quick)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta.update(load_after=loadavg(), seconds=time.perf_counter() - t0)
    rows, notes = rows_of(results)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "notes": notes, "scripts": results}, indent=2,
                         ensure_ascii=False))
    else:
        print(markdown(rows, notes, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
