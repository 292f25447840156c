"""`io.containerd.differ.v1.walking`: apply layers onto mounts and diff
two mounts into a layer, as containerd's walking differ and file-system
applier do (diff/walking, diff/apply, diff/stream.go).

Apply reads the blob from the namespaced content store, decompresses it as
its media type says (gzip and zstd are detected by their magic numbers the
way containerd's DecompressStream does; the docker media types too), and
unpacks it with archive.apply: straight into the upperdir when it is handed
a single overlay mount (whiteouts as overlayfs' own char devices and opaque
xattrs, missing parents inheriting the lowerdirs' attributes), otherwise
onto the mounts mounted on a temporary directory. The returned descriptor
is the uncompressed tar's: its digest is the layer's diff ID.

Compare mounts the lower read-write and the upper read-only, walks both
(archive.write_diff) and streams the layer into a content writer, gzip by
default, with the `containerd.io/uncompressed` label for compressed
layers. containerd 1.6 only writes tar and tar+gzip; zstd is written too
(as containerd 1.7 does).

All filesystem work (mounting included) runs in a worker thread; the
content writer is driven from that thread through the event loop. The tar
machinery (archive: tarfile, gzip) is imported by the functions that use
it, on the first Apply or Diff: a daemon that never unpacks does not carry
it (~0.5 MiB, ~3 ms at start).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tempfile
import threading
import time
from typing import Any, Callable, Iterable

import structlog

from pycontainerd.core import failpoint
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs
from pycontainerd.pkg import mount as mountlib
from pycontainerd.pkg import platforms
from pycontainerd.pkg.mount import Mount
from pycontainerd.pkg.oci.descriptor import Descriptor


log = structlog.get_logger(__name__)

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = MEDIA_TYPE_LAYER + "+gzip"
MEDIA_TYPE_LAYER_ZSTD = MEDIA_TYPE_LAYER + "+zstd"
MEDIA_TYPE_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# -- media types and compression ----------------------------------------------------


def diff_compression(media_type: str) -> str:
    """containerd's images.DiffCompression: "gzip", "zstd", "" (plain tar)
    or "unknown" (docker's plain tar, which may be compressed anyway)."""
    parts = media_type.split("+") if media_type else [""]
    base, ext = parts[0], sorted(parts[1:])
    if base in (DOCKER_LAYER, DOCKER_LAYER_FOREIGN):
        return "" if ext else "unknown"
    if base in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN_GZIP):
        return "" if ext else "gzip"
    if base in (MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_NONDIST):
        if ext and ext[-1] in ("gzip", "zstd"):
            return ext[-1]
        return ""
    raise errdefs.NotImplementedErr(f"unrecognised mediatype {media_type}")


def detect_compression(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        return "zstd"  # a skippable frame first
    return ""


class _ReaderAtStream:
    """A sequential, peekable reader over a content ReaderAt."""

    def __init__(self, ra: Any):
        self.ra = ra
        self.offset = 0
        self.pending = b""

    def peek(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self.ra.read_at_sync(self.offset, n - len(self.pending))
            if not chunk:
                break
            self.offset += len(chunk)
            self.pending += chunk
        return self.pending[:n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _CHUNK
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        chunk = self.ra.read_at_sync(self.offset, n)
        self.offset += len(chunk)
        return chunk

    def readinto(self, buf) -> int:
        """What ISA-L's reader fills its input buffer with."""
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _Digesting:
    """The uncompressed tar, inflated and digested ahead of its reader in a
    thread of its own (as containerd pipes `unpigz` into its tar reader):
    inflating (ISA-L) and SHA-256 (OpenSSL) release the GIL, so they run
    beside the tar apply instead of before each of its reads. Up to
    `depth` 1 MiB blocks wait in between. `digest` and `count` cover
    everything read once the reader reached the end (`drain`)."""

    def __init__(self, inner: Any, cancelled: Callable[[], bool], depth: int = 8):
        import queue

        self.inner = inner
        self.hash = hashlib.sha256()
        self.count = 0
        self.cancelled = cancelled
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._produce, name="layer-inflate", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.inner.read(_CHUNK)
                if not data:
                    break
                self.hash.update(data)
                self.count += len(data)
                self._put(data)
        except BaseException as e:  # handed to the reader, raised there
            self._put(e)
            return
        self._put(None)

    def _put(self, item: Any) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        if self.cancelled():
            from pycontainerd.plugins.differ import archive
            raise archive.Cancelled()
        if not self._buf:
            if self._eof:
                return b""
            item = self._queue.get()
            if item is None:
                self._eof = True
                return b""
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if n is None or n < 0 or n >= len(item):
                return item  # a whole block, as the tar reader asks for: no copy
            self._buf = memoryview(item)
        if n is None or n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, memoryview(b"")
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out.tobytes()

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        """Stop the inflating thread (at once when the reader gave up)."""
        self._stop.set()
        self._thread.join()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def decompress_stream(raw: _ReaderAtStream, media_type: str) -> Any:
    """The uncompressed tar behind `raw`, as containerd's stream processors
    pick it: a plain-tar media type is read as is; any compressed (or
    docker's ambiguous) one is sniffed by magic number."""
    from pycontainerd.plugins.differ import archive

    try:
        declared = diff_compression(media_type)
    except errdefs.NotImplementedErr:
        raise archive.ArchiveError(
            f"failed to get stream processor for {media_type}: no processor for media-type") from None
    if declared == "":
        return raw
    kind = detect_compression(raw.peek(10))
    if kind == "gzip":
        from pycontainerd.plugins.differ.inflate import gzip_reader

        return gzip_reader(raw)  # ISA-L when installed, else zlib
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    return raw


# -- mounts ----------------------------------------------------------------------------

def readonly_mounts(mounts: Iterable[Mount]) -> list[Mount]:
    """containerd's readonlyMounts: `ro` for everything, and an overlay's
    upperdir turned into its topmost lowerdir (no workdir)."""
    out = []
    for m in mounts:
        if m.type == "overlay":
            opts, upper = [], ""
            for o in m.options:
                if o.startswith("upperdir="):
                    upper = o[len("upperdir="):]
                elif not o.startswith("workdir="):
                    opts.append(o)
            if upper:
                opts = ["lowerdir=" + upper + ":" + o[len("lowerdir="):] if o.startswith("lowerdir=") else o
                        for o in opts]
            out.append(Mount(m.type, m.source, opts, m.target))
        else:
            out.append(Mount(m.type, m.source, [o for o in m.options if o not in ("rw", "ro")] + ["ro"], m.target))
    return out


def with_temp_mount(mounts: list[Mount], fn: Callable[[str], Any], tmp_dir: str | None = None) -> Any:
    """Mount `mounts` on a fresh temporary directory, call fn(root), and
    unmount whatever happens. The directory is only rmdir'ed: removing its
    contents after a failed unmount would destroy the snapshot."""
    from pycontainerd.plugins.differ import archive

    root = tempfile.mkdtemp(prefix="containerd-mount", dir=tmp_dir)
    # messages name the directory, not where it is (the daemon's state)
    shown = os.path.basename(root)

    def hide(text: str) -> str:
        return text.replace(root, shown)

    try:
        try:
            mountlib.mount_all(mounts, root)
        except Exception as e:
            raise archive.ArchiveError(f"failed to mount {shown}: {hide(archive.describe(e))}") from e
        failpoint.hit("diff.temp-mount.mounted")  # crash tests: a mount the next start must clean
        try:
            return fn(root)
        except archive.Cancelled:
            raise
        except archive.ArchiveError as e:
            raise archive.ArchiveError(f"mount callback failed on {shown}: {hide(str(e))}") from e
        except errdefs.ContainerdError as e:
            raise type(e)(f"mount callback failed on {shown}: {hide(e.message)}") from e
        except Exception as e:
            raise archive.ArchiveError(f"mount callback failed on {shown}: {hide(archive.describe(e))}") from e
    finally:
        try:
            mountlib.unmount_all(root)
        finally:
            try:
                os.rmdir(root)
            except OSError as e:
                log.error("failed to remove mount temp dir", dir=root, error=str(e))


def overlay_paths(options: list[str]) -> tuple[str, list[str]] | None:
    """(upperdir, lowerdirs) of an overlay mount, or None without upperdir."""
    upper, lowers = "", []
    for o in options:
        if o.startswith("upperdir="):
            upper = o[len("upperdir="):]
        elif o.startswith("lowerdir="):
            lowers = o[len("lowerdir="):].split(":")
    if not upper:
        return None
    return upper, lowers


# -- bridging the worker thread to the async content writer ------------------------------


class _ThreadWriter:
    """A file-like sink for the worker thread that feeds the async content
    writer on the event loop, in 1 MiB pieces."""

    def __init__(self, writer: Any, loop: asyncio.AbstractEventLoop):
        self.writer = writer
        self.loop = loop
        self.buf = bytearray()

    def write(self, data) -> int:
        self.buf += data
        if len(self.buf) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            asyncio.run_coroutine_threadsafe(self.writer.write(data), self.loop).result()


class _Tee:
    def __init__(self, *sinks: Any):
        self.sinks = sinks

    def write(self, data) -> int:
        for s in self.sinks:
            s.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _HashSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return len(data)


def unique_ref() -> str:
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


async def _in_thread(fn: Callable[[Callable[[], bool]], Any]) -> Any:
    """Run fn(cancelled) in a thread; a cancelled call tells the thread,
    which stops at its next check and still unmounts."""
    flag = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(fn, flag.is_set))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        flag.set()
        try:
            await task
        except BaseException:
            pass
        raise


# -- the differ -----------------------------------------------------------------------------


class WalkingDiff:
    """Applier and Comparer over a namespaced content store."""

    def __init__(self, store: Any, tmp_dir: str | None = None):
        self.store = store  # the metadata plugin's namespaced content store
        self.tmp_dir = tmp_dir

    async def apply(self, namespace: str, desc: Descriptor, mounts: list[Mount],
                    payloads: dict[str, Any] | None = None) -> Descriptor:
        started = time.monotonic()
        try:
            ra = await self.store.reader_at(namespace, desc.digest)
        except errdefs.ContainerdError as e:
            raise type(e)(f"failed to get reader from content store: {e.message}") from None
        try:
            out = await _in_thread(lambda cancelled: self._apply_sync(desc, mounts, ra, cancelled))
        finally:
            ra.close()
        log.debug("diff applied", d=f"{time.monotonic() - started:.3f}s", digest=desc.digest, size=desc.size,
                  media=desc.media_type)
        return out

    def _apply_sync(self, desc: Descriptor, mounts: list[Mount], ra: Any, cancelled: Callable[[], bool]) -> Descriptor:
        tar = _Digesting(decompress_stream(_ReaderAtStream(ra), desc.media_type), cancelled)
        try:
            self._unpack(mounts, tar, cancelled)
            tar.drain()  # trailing data belongs to the diff ID too
        finally:
            tar.close()
        return Descriptor(MEDIA_TYPE_LAYER, tar.digest, tar.count)

    def _unpack(self, mounts: list[Mount], tar: _Digesting, cancelled: Callable[[], bool]) -> None:
        from pycontainerd.plugins.differ import archive

        if len(mounts) == 1 and mounts[0].type == "overlay" and not archive.running_in_userns():
            paths = overlay_paths(mounts[0].options)
            if paths is not None:
                upper, lowers = paths
                archive.apply(upper, tar, convert_whiteout=archive.overlay_convert_whiteout, parents=lowers,
                              cancelled=cancelled)
                return
        with_temp_mount(mounts, lambda root: archive.apply(root, tar, cancelled=cancelled), self.tmp_dir)

    async def compare(self, namespace: str, lower: list[Mount], upper: list[Mount], media_type: str = "",
                      ref: str = "", labels: dict[str, str] | None = None, lease: str = "") -> Descriptor:
        media_type = media_type or MEDIA_TYPE_LAYER_GZIP
        if media_type == MEDIA_TYPE_LAYER:
            compression = ""
        elif media_type == MEDIA_TYPE_LAYER_GZIP:
            compression = "gzip"
        elif media_type == MEDIA_TYPE_LAYER_ZSTD:
            compression = "zstd"
        else:
            raise errdefs.NotImplementedErr(f"unsupported diff media type: {media_type}")
        labels = dict(labels or {})
        new_ref = not ref
        ref = ref or unique_ref()
        store = self.store
        try:
            cw = await store.writer(namespace, ref, lease=lease)
        except errdefs.ContainerdError as e:
            raise type(e)(f"failed to open writer: {e.message}") from None
        loop = asyncio.get_running_loop()
        committed = False
        try:
            if not new_ref:
                await cw.truncate(0)
            uncompressed = await _in_thread(
                lambda cancelled: self._compare_sync(lower, upper, compression, _ThreadWriter(cw, loop), cancelled))
            if compression:
                labels[UNCOMPRESSED_LABEL] = uncompressed
            dgst = cw.digest()
            try:
                await cw.commit(0, "", labels or None)
            except errdefs.AlreadyExists:
                pass
            committed = True
        finally:
            await cw.close()
            if not committed and new_ref:
                try:
                    await store.abort(namespace, ref, lease)
                except errdefs.NotFound:
                    pass
                except Exception as e:  # noqa: BLE001 - the original error matters more
                    log.warning("failed to delete diff upload", ref=ref, error=str(e))
        info = await store.info(namespace, dgst)
        if compression and UNCOMPRESSED_LABEL not in info.labels:
            # the blob existed before without the label: add it
            info.labels[UNCOMPRESSED_LABEL] = labels[UNCOMPRESSED_LABEL]
            info = await store.update(namespace, info, ["labels." + UNCOMPRESSED_LABEL])
        return Descriptor(media_type, info.digest, info.size)

    def _compare_sync(self, lower: list[Mount], upper: list[Mount], compression: str, sink: _ThreadWriter,
                      cancelled: Callable[[], bool]) -> str:
        import gzip

        from pycontainerd.plugins.differ import archive

        def with_roots(lower_root: str) -> str:
            return with_temp_mount(readonly_mounts(upper), lambda upper_root: write(lower_root, upper_root),
                                   self.tmp_dir)

        def write(lower_root: str, upper_root: str) -> str:
            hasher = _HashSink()
            if compression == "gzip":
                comp = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0, filename="")
            elif compression == "zstd":
                import zstandard

                comp = zstandard.ZstdCompressor().stream_writer(sink, closefd=False)
            else:
                comp = None
            try:
                archive.write_diff(_Tee(comp, hasher) if comp is not None else _Tee(sink, hasher),
                                   lower_root, upper_root, cancelled=cancelled)
            finally:
                if comp is not None:
                    comp.close()
            sink.flush()
            return "sha256:" + hasher.hash.hexdigest()

        return with_temp_mount(lower, with_roots, self.tmp_dir)


# -- plugin ----------------------------------------------------------------------------------


async def init(ic: InitContext) -> WalkingDiff:
    ic.meta.platforms.append(platforms.default_string())
    tmp = os.path.join(ic.state, "mounts")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    # what a daemon killed mid-Apply or mid-Diff left mounted there
    for warning in await asyncio.to_thread(mountlib.cleanup_temp_mounts, tmp):
        log.warning("failed to clean up a temporary mount", error=warning)
    # the namespaced content store the metadata plugin owns (the one the
    # content service serves and whose lock GC takes)
    return WalkingDiff(ic.get(PluginType.METADATA).content_store, tmp)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.DIFF, id="walking", requires=(PluginType.METADATA,), init=init)]
