#!/usr/bin/env python3
"""Pull and unpack of a multi-layer image from a local registry: pycontainerd against the real containerd.

The image (built once, its layers cached under /var/tmp so rebuilding is
never measured) is busybox-static plus this machine's /usr/lib/python3.11,
/usr/lib/python3/dist-packages, /usr/share/doc and /usr/share/locale, each
its own gzip layer (at least
120 MiB compressed and 10,000 files; the script checks). The benchmark
starts Debian's `docker-registry` on 127.0.0.1, pushes the image there,
then, for each run, in alternation, on a fresh daemon whose root and state
are on /dev/shm (empty content store, no snapshots), times:

    (a) ctr   images pull --plain-http REF   against a real containerd
    (b) pyctr images pull --plain-http REF   against pycontainerd
    (c) ctr   images pull --plain-http REF   against pycontainerd

All three include the unpack (ctr pulls and unpacks by default); after each
run the snapshot chain is checked to be committed, one snapshot per layer.
containerd inflates with `unpigz` when it finds it on its PATH: the table
says whether it did (`--containerd-unpigz hidden` starts containerd with a
PATH without it, to measure both). Medians of --runs; ratios to (a);
targets (b) <= 0.7x, (c) <= 1.0x. The CPU time the daemon and the client
spent on each pull (user + system, unpigz included) is reported beside the
wall time: on a shared machine it says more about the work than the clock. A benchmark, not a test: it exits 0 on
MISS.

    .venv/bin/python bench/pull.py [--runs 5] [--containerd-unpigz path|hidden] [--json]
"""
from __future__ import annotations

import argparse, gzip, hashlib, io, json, os, platform, shutil, statistics, subprocess, sys, tarfile, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
import startup  # noqa: E402  (config_text, wait_ready, stop: how every benchmark runs a daemon)

REPO = startup.REPO
CACHE = Path(os.environ.get("PULL_BENCH_CACHE", "/var/tmp/pycontainerd-bench-pull"))
CACHE_VERSION = "2"
SOURCES = ("usr/lib/python3.11", "usr/lib/python3/dist-packages", "usr/share/doc", "usr/share/locale")
MIN_COMPRESSED = 120 << 20
MIN_FILES = 10_000
TARGETS = {"b": 0.7, "c": 1.0}
CASES = (("a", "containerd", "ctr"), ("b", "pycontainerd", "pyctr"), ("c", "pycontainerd", "ctr"))
LABELS = {"a": "(a) ctr → containerd", "b": "(b) pyctr → pycontainerd", "c": "(c) ctr → pycontainerd"}


# -- the image, built once ----------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A file sink that hashes and counts what the gzip writer emits."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def _gzip_tar(out_path: Path, add) -> dict:
    """A gzip (level 6, as Go's and containerd's default) of the tar `add`
    writes; returns its descriptor, diff ID and file count."""
    tmp = out_path.with_suffix(".partial")
    tar_hash = hashlib.sha256()
    count = [0]

    class TarSink(io.RawIOBase):
        def __init__(self, gz):
            self.gz = gz

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            tar_hash.update(b)
            return self.gz.write(b)

    with open(tmp, "wb") as f:
        sink = _Hashing(f)
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
            with tarfile.open(fileobj=TarSink(gz), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                def counted(info):
                    if info.isreg():
                        count[0] += 1
                    return info
                add(tar, counted)
    os.replace(tmp, out_path)
    return {"digest": "sha256:" + sink.h.hexdigest(), "size": sink.n, "diff_id": "sha256:" + tar_hash.hexdigest(),
            "files": count[0], "path": str(out_path)}


def _busybox(tar, counted) -> None:
    for d in ("bin", "etc", "tmp", "root", "dev", "proc", "sys"):
        info = tarfile.TarInfo(d)
        info.type, info.mode = tarfile.DIRTYPE, 0o755 if d != "tmp" else 0o1777
        tar.addfile(info)
    tar.add("/bin/busybox", "bin/busybox", filter=counted)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)


def build_image() -> dict:
    """The layers, config and manifest: from the cache when it is there."""
    CACHE.mkdir(parents=True, exist_ok=True)
    index_path = CACHE / "image.json"
    if index_path.exists():
        image = json.loads(index_path.read_text())
        if image.get("version") == CACHE_VERSION and all(Path(l["path"]).exists() for l in image["layers"]):
            return image
    print("building the image layers once (cached in %s)..." % CACHE, file=sys.stderr)
    layers = [_gzip_tar(CACHE / "busybox.tar.gz", _busybox)]
    for src in SOURCES:
        name = src.replace("/", "_") + ".tar.gz"
        layers.append(_gzip_tar(CACHE / name, lambda tar, counted, src=src: tar.add("/" + src, src, filter=counted)))
    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({"architecture": host, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]}}).encode()
    (CACHE / "config.json").write_bytes(config)
    cfg = {"mediaType": "application/vnd.oci.image.config.v1+json",
           "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": cfg,
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": l["digest"], "size": l["size"]} for l in layers]}).encode()
    (CACHE / "manifest.json").write_bytes(manifest)
    image = {"version": CACHE_VERSION, "layers": layers, "config": cfg, "config_path": str(CACHE / "config.json"),
             "manifest_path": str(CACHE / "manifest.json"),
             "manifest": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest)}}
    index_path.write_text(json.dumps(image, indent=1))
    return image


def push(image: dict, ref: str) -> None:
    from pycontainerd.client.remotes import Options, Registry
    from pycontainerd.pkg.oci.descriptor import Descriptor

    with Registry(Options(plain_http=True)) as client:
        for l in image["layers"]:
            desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l["digest"], l["size"])
            client.push_blob(ref, desc, lambda p=l["path"]: open(p, "rb"))
        c = image["config"]
        client.push_blob(ref, Descriptor(c["mediaType"], c["digest"], c["size"]),
                         lambda: open(image["config_path"], "rb"))
        m = image["manifest"]
        client.push_manifest(ref, Descriptor(m["mediaType"], m["digest"], m["size"]),
                             Path(image["manifest_path"]).read_bytes())


# -- the runs ----------------------------------------------------------------------------------------


def chain_top(diff_ids: list[str]) -> str:
    top = ""
    for d in diff_ids:
        top = d if not top else "sha256:" + hashlib.sha256(f"{top} {d}".encode()).hexdigest()
    return top


def path_without_unpigz() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not os.access(os.path.join(p, "unpigz"), os.X_OK))


def with_daemon(kind: str, binary: str, args, env: dict, workload):
    """startup.with_daemon with an environment of our own (containerd's PATH
    decides whether it inflates with unpigz)."""
    tmp = tempfile.mkdtemp(prefix=f"bench-pull-{kind}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sock, cfg = f"{tmp}/grpc.sock", f"{tmp}/config.toml"
    Path(cfg).write_text(startup.config_text(kind, tmp, sock, args))
    proc = None
    try:
        with open(f"{tmp}/daemon.log", "wb") as log:
            proc = subprocess.Popen([binary, "--config", cfg], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
            startup.wait_ready(proc, sock, 60, 0.01)
            return workload(sock, proc.pid)
    except Exception as exc:
        tail = Path(f"{tmp}/daemon.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind}: {exc}\n--- its log ---\n{tail}") from exc
    finally:
        if proc is not None:
            startup.stop(proc, {})
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """user + system time of a process and of the children it has reaped
    (containerd's unpigz), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pull(client: str, sock: str, pid: int, ref: str, top: str, n_layers: int, ctr: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of daemon + client) of one pull."""
    import resource

    daemon0 = cpu_seconds(pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([client, "--address", sock, "images", "pull", "--plain-http", ref],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_seconds(pid) - daemon0 + (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if r.returncode:
        raise RuntimeError(f"{client} images pull failed: {r.stderr.decode(errors='replace').strip()[-1000:]}")
    snaps = subprocess.run([ctr, "--address", sock, "snapshots", "ls"], capture_output=True, timeout=60, check=True)
    rows = [line.split() for line in snaps.stdout.decode().splitlines()[1:]]
    committed = {r[0] for r in rows if r[-1] == "Committed"}
    if len(committed) != n_layers or top not in committed:
        raise RuntimeError(f"{client} did not unpack the image: snapshots {rows}")
    return elapsed, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per case (default 5)")
    p.add_argument("--pycontainerd", default=str(REPO / ".venv/bin/pycontainerd"))
    p.add_argument("--pyctr", default=str(REPO / ".venv/bin/pyctr"))
    p.add_argument("--containerd", default="/usr/bin/containerd")
    p.add_argument("--ctr", default="/usr/bin/ctr")
    p.add_argument("--registry", default="/usr/bin/docker-registry")
    p.add_argument("--containerd-disable-cri", action="store_true", help="start containerd without its CRI plugin")
    p.add_argument("--containerd-unpigz", choices=("path", "hidden"), default="path",
                   help="containerd's PATH as is (it uses unpigz when there), or without unpigz")
    p.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = p.parse_args(argv)
    binaries = {"pycontainerd": args.pycontainerd, "containerd": args.containerd}
    clients = {"ctr": args.ctr, "pyctr": args.pyctr}
    for path in [*binaries.values(), *clients.values(), args.registry]:
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (run `make install`, or pass its path)")
    image = build_image()
    compressed = sum(l["size"] for l in image["layers"])
    files = sum(l["files"] for l in image["layers"])
    if compressed < MIN_COMPRESSED or files < MIN_FILES:
        print(f"warning: the image is {compressed / 2**20:.0f} MiB / {files} files, under the "
              f"{MIN_COMPRESSED >> 20} MiB / {MIN_FILES} the benchmark asks for", file=sys.stderr)
    env_containerd = dict(os.environ)
    if args.containerd_unpigz == "hidden":
        env_containerd["PATH"] = path_without_unpigz()
    unpigz = shutil.which("unpigz", path=env_containerd.get("PATH"))
    envs = {"containerd": env_containerd, "pycontainerd": dict(os.environ)}
    top = chain_top([l["diff_id"] for l in image["layers"]])

    from registry_support import RegistryProcess

    reg = RegistryProcess()
    samples: dict[str, list[float]] = {c[0]: [] for c in CASES}
    cpu: dict[str, list[float]] = {c[0]: [] for c in CASES}
    try:
        ref = f"{reg.host}/bench/pull:1"
        push(image, ref)
        for i in range(args.runs):
            for case, kind, client in CASES:
                s, c = with_daemon(kind, binaries[kind], args, envs[kind],
                                   lambda sock, pid: pull(clients[client], sock, pid, ref, top,
                                                          len(image["layers"]), args.ctr))
                samples[case].append(s)
                cpu[case].append(c)
                print(f"run {i + 1}/{args.runs} {LABELS[case]:26} {s:6.2f} s  "
                      f"({compressed / 2**20 / s:6.1f} MiB/s)  CPU {c:6.2f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; daemons and registry stopped, temporary directories removed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        reg.stop()
    med = {c: statistics.median(v) for c, v in samples.items()}
    med_cpu = {c: statistics.median(v) for c, v in cpu.items()}
    ratios = {c: med[c] / med["a"] for c in med}
    result = {"compressed_mib": round(compressed / 2**20, 1), "files": files, "layers": len(image["layers"]),
              "runs": args.runs, "median_s": med, "ratio": ratios, "targets": TARGETS,
              "median_cpu_s": med_cpu, "cpu_samples": cpu,
              "unpigz_on_containerd_path": unpigz or "", "samples": samples,
              "machine": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| pull + unpack | median | ratio to (a) | target | result | CPU (daemon + client) |")
    print("|---|---:|---:|---:|:---:|---:|")
    for case, _, _ in CASES:
        target = TARGETS.get(case)
        verdict = "" if target is None else ("PASS" if ratios[case] <= target else "MISS")
        print(f"| {LABELS[case]} | {med[case]:.2f} s | {ratios[case]:.2f}x | "
              f"{'–' if target is None else f'≤ {target:g}x'} | {verdict} | {med_cpu[case]:.2f} s |")
    print()
    cri = "CRI plugin disabled" if args.containerd_disable_cri else "all default plugins"
    print(f"Image: {len(image['layers'])} gzip layers, {compressed / 2**20:.0f} MiB compressed, {files} files, "
          f"from docker-registry on 127.0.0.1. Medians of {args.runs} alternating run(s) per case, each on a fresh "
          f"root on /dev/shm; containerd with {cri}; unpigz on containerd's PATH: "
          f"{'yes (' + unpigz + ')' if unpigz else 'no'}; {result['machine']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
