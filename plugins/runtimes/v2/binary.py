"""The shim binary, as containerd 1.6 finds and runs it.

A runtime name `io.containerd.runc.v2` means the binary
`containerd-shim-runc-v2` (the last two dot-separated parts); an absolute
path is used as it is. The binary is looked for beside the name, then on
PATH, then beside the daemon's own executable.

Both actions run in the bundle directory with

    <shim> -namespace <ns> -address <grpc socket> -publish-binary <pycontainerd> <args...>

in the environment of the daemon plus GOMAXPROCS=2 and TTRPC_ADDRESS (the
daemon's ttrpc socket, where the shim forwards its events; SCHED_CORE=1 with
the plugin's `sched_core`), in a process
group of its own. `start` gets the runtime options (a serialized
google.protobuf.Any) on stdin and prints the ttrpc address of the shim it
left running; `delete` cleans up after a shim that is gone and prints a
DeleteResponse.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import structlog
from google.protobuf.message import DecodeError

from pycontainerd.pkg import errdefs, timestamps
from pycontainerd.pkg.executable import daemon_executable as publish_binary
from pycontainerd.pkg.runtime import Exit

from .bundle import Bundle

log = structlog.get_logger(__name__)

SHIM_BINARY_FORMAT = "containerd-shim-{}-{}"
MAX_OUTPUT_QUOTED = 4096


class ShimError(errdefs.Unknown):
    """What containerd reports as a plain error (gRPC code Unknown): the
    message alone, no sentinel."""

    sentinel = ""


def binary_name(runtime: str) -> str:
    parts = runtime.split(".")
    if len(parts) < 2:
        return ""
    return SHIM_BINARY_FORMAT.format(parts[-2], parts[-1])


def resolve(runtime: str) -> str:
    """The shim binary's absolute path for a runtime name (or path)."""
    if not runtime:
        raise ShimError("no runtime name")
    if os.path.isabs(runtime):
        if not os.path.exists(runtime):
            raise ShimError(f"invalid custom binary path: stat {runtime}: no such file or directory")
        return runtime
    name = binary_name(runtime)
    if not name:
        raise ShimError(
            f"invalid runtime name {runtime}, correct runtime name should be either format like "
            "`io.containerd.runc.v1` or a full path to the binary"
        )
    beside = os.path.abspath(os.path.join(os.path.dirname(runtime), name))
    if os.path.exists(beside):
        return beside
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    ours = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name)
    if os.path.exists(ours):
        return ours
    raise ShimError(f'runtime "{runtime}" binary not installed "{name}": file does not exist')


class Binary:
    def __init__(self, bundle: Bundle, path: str, address: str, ttrpc_address: str, sched_core: bool = False):
        self.sched_core = sched_core
        self.bundle = bundle
        self.path = path
        self.address = address
        self.ttrpc_address = ttrpc_address

    def _argv(self, *args: str) -> list[str]:
        return [self.path, "-namespace", self.bundle.namespace, "-address", self.address,
                "-publish-binary", publish_binary(), *args]

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "GOMAXPROCS": "2", "TTRPC_ADDRESS": self.ttrpc_address}
        if self.sched_core:  # the shim puts itself and its tasks in a core-scheduling group
            env["SCHED_CORE"] = "1"
        return env

    def _exec_error(self, exc: OSError) -> str:
        """Go's wording for a program that could not be run."""
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return f"fork/exec {errdefs.cut(self.path)}: {reason}"

    async def start(self, options: bytes | None) -> str:
        """Run the `start` action; the address the shim prints."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv("-id", self.bundle.id, "start"),
                cwd=self.bundle.path, env=self._env(), process_group=0,
                stdin=asyncio.subprocess.PIPE if options else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:  # not executable, not a program: Go's "<output>: <error>", output empty
            raise ShimError(f": {self._exec_error(exc)}") from None
        out, _ = await proc.communicate(options or None)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise ShimError(f"{errdefs.cut(text, MAX_OUTPUT_QUOTED)}: {_exit_text(proc.returncode)}")
        return text.strip()

    async def delete(self, remove_bundle: bool = True) -> Exit:
        """Run the `delete` action for a shim that is gone (or a task that
        failed to be created), then remove the bundle unless told not to;
        the exit it reports."""
        from pycontainerd.api.runtime.task.v2 import shim_pb2

        log.info("cleaning up dead shim", id=self.bundle.id, namespace=self.bundle.namespace)
        cwd = self.bundle.path if os.path.isdir(self.bundle.path) else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv("-id", self.bundle.id, "-bundle", self.bundle.path, "delete"),
                cwd=cwd, env=self._env(), process_group=0, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ShimError(f": {self._exec_error(exc)}") from None
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise ShimError(f"{errdefs.cut(err.decode(errors='replace'), MAX_OUTPUT_QUOTED)}: {_exit_text(proc.returncode)}")
        if err.strip():
            log.warning("cleanup warnings", id=self.bundle.id, warnings=errdefs.cut(err.decode(errors="replace")))
        try:
            resp = shim_pb2.DeleteResponse.FromString(out)
        except DecodeError:  # a shim printing something else: what it said, bounded
            raise ShimError(f"cleanup: the shim printed no DeleteResponse: {errdefs.cut(out.decode(errors='replace'))}") from None
        if remove_bundle:
            await asyncio.to_thread(self.bundle.delete)
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))


def _exit_text(returncode: int | None) -> str:
    """Go's wording for how a command ended."""
    if returncode is not None and returncode < 0:
        import signal

        return f"signal: {(signal.strsignal(-returncode) or str(-returncode)).lower()}"
    return f"exit status {returncode}"
