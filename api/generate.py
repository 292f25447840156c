"""Regenerate the Python stubs for containerd's API from the .proto files in api/.

The stubs are committed so that installing pycontainerd needs no protoc. This
module rebuilds them (run it via `make proto`), and the freshness test runs it
into a temp dir to catch stubs that no longer match their .proto.

    python -m pycontainerd.api.generate            # rewrite stubs in place
    python -m pycontainerd.api.generate --out DIR  # same layout, under DIR

Our protos import each other as "pycontainerd/api/...", so protoc must see
api/ at that path: a temp include root holds the symlink
pycontainerd/api -> <repo>/api (and google/rpc -> googleapis-common-protos'
installed .proto files). The compiler is grpc_tools' bundled protoc, run
in-process; pin grpcio-tools to keep the output byte-identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
PROTO_PREFIX = Path("pycontainerd", "api")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


class GenerateError(RuntimeError):
    pass


def proto_files(api_dir: Path = API_DIR) -> list[Path]:
    """Every .proto under api_dir, relative to it, in a stable order."""
    return sorted(p.relative_to(api_dir) for p in api_dir.rglob("*.proto"))


def is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def generated_files(root: Path) -> list[Path]:
    """Generated stub files under root, relative to it, in a stable order."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and is_generated(p))


def _grpc_tools_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def _google_rpc_dir() -> Path:
    spec = importlib.util.find_spec("google.rpc")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "status.proto").is_file():
            return Path(location).resolve()
    raise GenerateError("google/rpc/status.proto not found: install googleapis-common-protos")


def _run_protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    # protoc prints its own diagnostics straight to stderr (fd 2).
    code = protoc.main(["grpc_tools.protoc", *args])
    if code != 0:
        raise GenerateError(f"protoc failed with exit code {code} (see its messages above)")


def generate(out_dir: Path, api_dir: Path = API_DIR) -> list[Path]:
    """Compile every .proto under api_dir into out_dir; return the files written.

    Stale generated files in out_dir (whose .proto is gone) are removed.
    """
    protos = proto_files(api_dir)
    if not protos:
        raise GenerateError(f"no .proto files under {api_dir}")

    with tempfile.TemporaryDirectory(prefix="pycontainerd-protoc-") as tmp:
        tmp = Path(tmp)
        include, build = tmp / "include", tmp / "build"
        (include / PROTO_PREFIX).parent.mkdir(parents=True)
        (include / PROTO_PREFIX).symlink_to(api_dir, target_is_directory=True)
        (include / "google").mkdir()
        (include / "google" / "rpc").symlink_to(_google_rpc_dir(), target_is_directory=True)
        build.mkdir()

        _run_protoc(
            [
                f"--proto_path={include}",
                f"--proto_path={_grpc_tools_include()}",
                f"--python_out={build}",
                f"--pyi_out={build}",
                f"--grpc_python_out={build}",
                # Paths through the symlink, so protoc maps them to pycontainerd/api/...
                *(str(include / PROTO_PREFIX / p) for p in protos),
            ]
        )

        produced_root = build / PROTO_PREFIX
        produced = generated_files(produced_root) if produced_root.is_dir() else []
        if not produced:
            raise GenerateError("protoc succeeded but produced no files")

        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in set(generated_files(out_dir)) - set(produced):
            (out_dir / stale).unlink()
        for rel in produced:
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(produced_root / rel, dest)

    _ensure_packages(out_dir, {p.parent for p in protos})
    return produced


def _ensure_packages(out_dir: Path, folders: set[Path]) -> None:
    """Create an empty __init__.py in each folder (and its parents) below out_dir."""
    needed = set()
    for folder in folders:
        needed.update(p for p in (folder, *folder.parents) if p != Path("."))
    for folder in sorted(needed):
        init = out_dir / folder / "__init__.py"
        if not init.exists():
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycontainerd.api.generate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=API_DIR, help="output root, same layout as api/ (default: api/ itself)"
    )
    args = parser.parse_args(argv)
    try:
        written = generate(args.out.resolve())
    except GenerateError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 1
    print(f"generate: wrote {len(written)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
