"""io.containerd.content.v1.content: the local content-addressable store.

The on-disk layout is containerd's (content/local), so a root written by one
can be read by the other:

    <root>/blobs/<alg>/<hex>            committed blobs, read-only files
    <root>/ingest/<sha256(ref) hex>/    one directory per ingest in progress
        ref        the ref, verbatim (the directory name is only its hash)
        data       the bytes written so far; its size is the offset
        startedat  updatedat   RFC 3339 timestamps with nanoseconds
        total      the expected size, when the writer declared one

This store knows nothing about namespaces or labels; the metadata layer
(plugins/metadata/content.py) gives each namespace its view on top of it.

Writes stream with offsets and hash incrementally. A writer re-opened on an
existing ingest (after a broken stream or a daemon restart) continues at the
data file's current size, re-hashing what is there. Commit checks the size
and digest first, fsyncs, renames into blobs/ (atomic), fsyncs the directory,
and only then removes the ingest directory: a partial blob is never visible
under a digest. One writer per ref at a time; a second gets containerd's
"ref ... locked" Unavailable error. At most `max_open_writers()` writers
are open at once (each holds a descriptor); past that, Unavailable too. A
disk that refuses (no space, I/O error) fails the write with a plain
StorageError, and a writer that could not set up its ingest removes it.
All file I/O runs in threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import stat
import threading
import time
from typing import Iterable

import structlog

from pycontainerd.core import filters
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, goduration
from pycontainerd.pkg.content import Info, Status, adapt_info, adapt_status
from pycontainerd.pkg.digest import ALGORITHMS, digest_error, validate_digest
from pycontainerd.pkg.timestamps import format_rfc3339nano, go_string, parse_rfc3339nano

log = structlog.get_logger(__name__)


def digest_of_string(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


# -- in-process ref locks (containerd's content/local/locks.go) ------------------

_locks: dict[str, int] = {}  # ingest directory -> since (ns)
_locks_mu = threading.Lock()


def _try_lock(key: str, ref: str) -> None:
    with _locks_mu:
        since = _locks.get(key)
        if since is not None:
            now = time.time_ns()
            raise errdefs.Unavailable(f"ref {ref} locked for {goduration.format(now - since)} (since {go_string(since)})")
        _locks[key] = time.time_ns()


def _unlock(key: str) -> None:
    with _locks_mu:
        _locks.pop(key, None)


# -- small file helpers (run in threads) -------------------------------------------


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode()


def write_atomic(path: str, data: bytes) -> None:
    """Temp name, O_SYNC write, rename: containerd's writeToCompletion."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_SYNC | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def fsync_dir(path: str) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


HASH_CHUNK = 1 << 20


# -- a bound on open writers --------------------------------------------------------
#
# Each open writer holds a descriptor (its data file) until it commits or
# closes. Without a bound, one client opening ingests without end takes
# every descriptor the daemon has, and then nothing works (not even the
# database). containerd has no such bound and no config key for one; the
# cap here follows the descriptor limit: half of what is left once a
# reserve for everything else (sockets, database, readers, snapshotters)
# is set aside. Past it a writer is refused with Unavailable, which
# containerd's clients (content.OpenWriter) retry with a backoff, as they
# do for a locked ref.

WRITER_FD_RESERVE = 64


def max_open_writers() -> int:
    """The most writers a store keeps open at once, from RLIMIT_NOFILE."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(1, (soft - WRITER_FD_RESERVE) // 2)


def _take_writer_slot(store: "LocalStore") -> None:
    with store._writers_mu:
        if store._open_writers >= store.max_writers:
            raise errdefs.Unavailable(f"too many open writers ({store.max_writers}), try again later")
        store._open_writers += 1


class StorageError(errdefs.Unknown):
    """The disk refused (no space, quota, I/O error). It crosses the API as
    containerd sends an OS error: code Unknown, the reason in words, and no
    path of ours in the message."""

    def __init__(self, what: str, exc: OSError):
        reason = os.strerror(exc.errno).lower() if exc.errno else "i/o error"
        super().__init__(f"{what}: {reason}")
        self.args = (self.message,)  # str(): no sentinel appended, as Go's plain error

    def __str__(self) -> str:
        return self.message


def _release_writer_slot(w: "Writer") -> None:
    """Give the writer's slot back, once (commit and close both call this)."""
    store = w.__dict__.pop("_slot_of", None)
    if store is not None:
        with store._writers_mu:
            store._open_writers -= 1


# -- the store --------------------------------------------------------------------


class LocalStore:
    """containerd's content/local store. Every method is async; the file
    work happens in threads."""

    def __init__(self, root: str):
        self.root = root
        self.max_writers = max_open_writers()
        self._open_writers = 0
        self._writers_mu = threading.Lock()
        os.makedirs(os.path.join(root, "ingest"), exist_ok=True)
        os.makedirs(os.path.join(root, "blobs"), exist_ok=True)

    # paths
    def blob_path(self, dgst: str) -> str:
        validate_digest(dgst)
        alg, _, hexpart = dgst.partition(":")
        return os.path.join(self.root, "blobs", alg, hexpart)

    def ingest_root(self, ref: str) -> str:
        # the ref's hash keeps the directory name short and path-safe
        return os.path.join(self.root, "ingest", digest_of_string(ref))

    # blobs
    def _info_sync(self, dgst: str) -> Info:
        p = self.blob_path(dgst)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {dgst}") from None
        return Info(dgst, st.st_size, st.st_mtime_ns, st.st_atime_ns)

    async def info(self, dgst: str) -> Info:
        return await asyncio.to_thread(self._info_sync, dgst)

    async def update(self, info: Info, paths: list[str] | tuple[str, ...] = ()) -> Info:
        """A bare store keeps no labels (the metadata layer does), so it
        refuses, with containerd's wording for a store without a label store."""
        raise errdefs.FailedPrecondition("update not supported on immutable content store")

    def exists(self, dgst: str) -> bool:
        try:
            return os.path.exists(self.blob_path(dgst))
        except errdefs.InvalidArgument:
            return False

    async def reader_at(self, dgst: str) -> "ReaderAt":
        p = self.blob_path(dgst)

        def open_() -> ReaderAt:
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise errdefs.NotFound(f"blob {dgst} expected at {p}: blob not found") from None
            return ReaderAt(fd, os.fstat(fd).st_size)

        return await asyncio.to_thread(open_)

    async def delete(self, dgst: str) -> None:
        p = self.blob_path(dgst)

        def rm() -> None:
            try:
                os.unlink(p)
            except FileNotFoundError:
                raise errdefs.NotFound(f"content {dgst}") from None

        await asyncio.to_thread(rm)

    def _walk_sync(self, flt: filters.Filter) -> list[Info]:
        out = []
        blobs = os.path.join(self.root, "blobs")
        for alg in sorted(os.listdir(blobs)):
            if alg not in ALGORITHMS:
                continue
            with os.scandir(os.path.join(blobs, alg)) as it:
                for entry in sorted(it, key=lambda e: e.name):
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    dgst = f"{alg}:{entry.name}"
                    if digest_error(dgst):
                        log.error("invalid digest for blob path", path=entry.path)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted while walking
                        continue
                    info = Info(dgst, st.st_size, st.st_mtime_ns, st.st_atime_ns)
                    if flt.match(adapt_info(info)):
                        out.append(info)
        return out

    async def walk(self, *filter_strings: str) -> list[Info]:
        flt = await filters.parse_all_off_loop(*filter_strings)
        return await filters.matching(flt, self._walk_sync, flt)

    # ingests
    def _status_sync(self, path: str) -> Status:
        try:
            st = os.stat(os.path.join(path, "data"))
            ref = _read_text(os.path.join(path, "ref"))
        except FileNotFoundError as exc:
            raise errdefs.NotFound(f"stat {exc.filename}: no such file or directory") from None
        try:
            started = parse_rfc3339nano(_read_text(os.path.join(path, "startedat")))
            updated = parse_rfc3339nano(_read_text(os.path.join(path, "updatedat")))
        except (OSError, ValueError) as exc:
            raise errdefs.NotFound(f"could not read ingest timestamps: {exc}") from None
        # updatedat is not rewritten on every write; the data file knows better
        updated = max(updated, st.st_mtime_ns)
        try:
            total = int(_read_text(os.path.join(path, "total")))
        except (OSError, ValueError):
            total = 0
        return Status(ref=ref, offset=st.st_size, total=total, started_at=started, updated_at=updated)

    async def status(self, ref: str) -> Status:
        return await asyncio.to_thread(self._status_sync, self.ingest_root(ref))

    def _list_statuses_sync(self, flt: filters.Filter) -> list[Status]:
        out = []
        ingest = os.path.join(self.root, "ingest")
        for name in sorted(os.listdir(ingest)):
            try:
                st = self._status_sync(os.path.join(ingest, name))
            except errdefs.NotFound:  # committed or aborted meanwhile
                continue
            if flt.match(adapt_status(st)):
                out.append(st)
        return out

    async def list_statuses(self, *filter_strings: str) -> list[Status]:
        flt = await filters.parse_all_off_loop(*filter_strings)
        return await filters.matching(flt, self._list_statuses_sync, flt)

    def _status_refs_sync(self) -> list[str]:
        refs = []
        ingest = os.path.join(self.root, "ingest")
        for name in sorted(os.listdir(ingest)):
            try:
                refs.append(_read_text(os.path.join(ingest, name, "ref")))
            except OSError as exc:
                log.error("failed to read ingest ref", path=os.path.join(ingest, name), error=str(exc))
        return refs

    async def walk_status_refs(self) -> list[str]:
        """Every ingest's ref (for garbage collection)."""
        return await asyncio.to_thread(self._status_refs_sync)

    async def abort(self, ref: str) -> None:
        path = self.ingest_root(ref)

        def rm() -> None:
            if not os.path.isdir(path):
                raise errdefs.NotFound(f'ingest ref "{ref}"')
            shutil.rmtree(path)

        await asyncio.to_thread(rm)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> "Writer":
        """Begin or resume the ingest `ref`. Held until commit or close."""
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        key = self.ingest_root(ref)
        err: errdefs.Unavailable | None = None
        for count in range(10):
            try:
                _try_lock(key, ref)
                err = None
                break
            except errdefs.Unavailable as exc:
                err = exc
                await asyncio.sleep(random.randrange(1 << count) / 1000)
        if err is not None:
            raise err
        try:
            _take_writer_slot(self)
        except BaseException:
            _unlock(key)
            raise
        try:
            w = await asyncio.to_thread(self._open_writer, ref, total, expected)
        except BaseException:
            with self._writers_mu:
                self._open_writers -= 1
            _unlock(key)
            raise
        w._slot_of = self
        return w

    def _open_writer(self, ref: str, total: int, expected: str) -> "Writer":
        if expected and os.path.exists(self.blob_path(expected)):
            raise errdefs.AlreadyExists(f"content {expected}")
        path = self.ingest_root(ref)
        data = os.path.join(path, "data")
        hasher = hashlib.sha256()
        offset = 0
        resumed = False
        created = False
        try:
            os.mkdir(path, 0o755)
            created = True
        except FileExistsError:
            try:
                st = self._status_sync(path)
                if st.ref != ref:
                    raise ValueError(f"ref key does not match: {ref} != {st.ref}")
                if total > 0 and st.total > 0 and total != st.total:
                    raise ValueError(f"provided total differs from status: {total} != {st.total}")
                offset = _hash_file(data, hasher)
                started, updated, total = st.started_at, st.updated_at, st.total
                resumed = True
            except (errdefs.NotFound, ValueError, OSError) as exc:
                log.info("failed to resume the ingest; recreating it", path=path, error=str(exc))
                hasher = hashlib.sha256()
                offset = 0
        try:
            if not resumed:
                started = updated = time.time_ns()
                write_atomic(os.path.join(path, "ref"), ref.encode())
                write_atomic(os.path.join(path, "startedat"), format_rfc3339nano(started).encode())
                write_atomic(os.path.join(path, "updatedat"), format_rfc3339nano(started).encode())
                if total > 0:
                    write_atomic(os.path.join(path, "total"), str(total).encode())
                else:  # a stale one from an ingest that could not be resumed
                    try:
                        os.unlink(os.path.join(path, "total"))
                    except FileNotFoundError:
                        pass
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except BaseException as exc:
            # a directory this call made and could not fill (EMFILE, ENOSPC)
            # is nobody's ingest: leave nothing behind
            if created:
                _remove_new_ingest(path)
            if isinstance(exc, OSError):
                raise StorageError("failed to start the ingest", exc) from None
            raise
        if not resumed:
            os.ftruncate(fd, 0)  # a stale data file from a broken layout
        os.lseek(fd, offset, os.SEEK_SET)
        return Writer(self, ref, path, fd, offset, total, hasher, started, updated)


_INGEST_FILES = ("ref", "startedat", "updatedat", "total", "data")


def _remove_new_ingest(path: str) -> None:
    """Remove an ingest directory that was just made, without opening a
    descriptor (shutil.rmtree opens the directory): it must work when the
    failure being cleaned up is EMFILE."""
    for name in _INGEST_FILES:
        for p in (os.path.join(path, name), os.path.join(path, name + ".tmp")):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("failed to remove a file of a failed ingest", path=p, error=str(exc))
    try:
        os.rmdir(path)
    except OSError as exc:
        log.error("failed to remove a failed ingest", path=path, error=str(exc))


def _hash_file(path: str, hasher) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        while True:
            got = f.readinto(buf)
            if not got:
                return n
            hasher.update(view[:got])
            n += got


def _write_all(fd: int, data) -> int:
    view = memoryview(data)
    n = 0
    while n < len(view):
        n += os.write(fd, view[n:])
    return n


class ReaderAt:
    """ReaderAt semantics over one open file: stateless positioned reads."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size

    def read_at_sync(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    async def read_at(self, offset: int, n: int) -> bytes:
        return await asyncio.to_thread(os.pread, self.fd, n, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ReaderAt":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Writer:
    """One write transaction. Not safe for concurrent use (the lock makes it
    the only writer of its ref)."""

    def __init__(self, store: LocalStore, ref: str, path: str, fd: int, offset: int, total: int,
                 hasher, started_at: int, updated_at: int):
        self.store = store
        self.ref = ref
        self.path = path
        self.fd: int | None = fd
        self.offset = offset
        self.total = total
        self.hasher = hasher
        self.started_at = started_at
        self.updated_at = updated_at
        self._broken = False

    def status(self) -> Status:
        return Status(ref=self.ref, offset=self.offset, total=self.total,
                      started_at=self.started_at, updated_at=self.updated_at)

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _write_sync(self, data) -> int:
        fd = self.fd
        if fd is None or self._broken:
            raise errdefs.FailedPrecondition("cannot write on closed writer")
        try:
            n = _write_all(fd, data)
        except OSError as exc:
            self._broken = True
            raise StorageError("failed to write ingest data", exc) from None
        self.hasher.update(data)
        return n

    async def write(self, data) -> int:
        """Append `data`. The file write and the hash update run in two
        threads at once (both release the GIL), so a chunk costs the longer
        of the two, not their sum."""
        if not len(data):
            return 0
        fd = self.fd
        if fd is None or self._broken:
            raise errdefs.FailedPrecondition("cannot write on closed writer")
        try:
            n, _ = await asyncio.gather(asyncio.to_thread(_write_all, fd, data),
                                        asyncio.to_thread(self.hasher.update, data))
        except BaseException as exc:
            # the hash and the file may disagree now: a new writer on this
            # ref re-hashes the file, this one is done
            self._broken = True
            if isinstance(exc, OSError):
                raise StorageError("failed to write ingest data", exc) from None
            raise
        self.offset += n
        self.updated_at = time.time_ns()
        return n

    def write_sync(self, data) -> int:
        """For callers already on a worker thread."""
        n = self._write_sync(data)
        self.offset += n
        self.updated_at = time.time_ns()
        return n

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise errdefs.InvalidArgument("Truncate: unsupported size")
        fd = self.fd
        if fd is None:
            raise errdefs.FailedPrecondition("cannot truncate a closed writer")

        def trunc() -> None:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)

        await asyncio.to_thread(trunc)
        self.offset = 0
        self.hasher = hashlib.sha256()

    async def commit(self, size: int = 0, expected: str = "") -> str:
        """Verify and move the data into blobs/. Returns the digest. The
        ingest stays (resumable) when the size or digest is wrong."""
        try:
            return await asyncio.to_thread(self._commit_sync, size, expected)
        finally:
            _release_writer_slot(self)
            _unlock(self.path)

    def _commit_sync(self, size: int, expected: str) -> str:
        fd, self.fd = self.fd, None
        if fd is None or self._broken:
            if fd is not None:
                os.close(fd)
            raise errdefs.FailedPrecondition("cannot commit on closed writer")
        try:
            os.fsync(fd)
            actual_size = os.fstat(fd).st_size
        except OSError as exc:
            raise StorageError("failed to sync ingest data", exc) from None
        finally:
            os.close(fd)
        if size > 0 and size != actual_size:
            raise errdefs.FailedPrecondition(f"unexpected commit size {actual_size}, expected {size}")
        dgst = self.digest()
        if expected and expected != dgst:
            raise errdefs.FailedPrecondition(f"unexpected commit digest {dgst}, expected {expected}")
        target = self.store.blob_path(dgst)
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, 0o755, exist_ok=True)
        except OSError as exc:
            raise StorageError("failed to commit", exc) from None
        if os.path.exists(target):
            shutil.rmtree(self.path, ignore_errors=True)
            raise errdefs.AlreadyExists(f"content {dgst}")
        os.rename(os.path.join(self.path, "data"), target)
        fsync_dir(parent)
        now = time.time_ns()
        try:
            os.utime(target, ns=(now, now))
        except OSError:
            log.error("failed to change file time to commit time", digest=dgst)
        shutil.rmtree(self.path, ignore_errors=True)
        try:  # read-only from now on, within what the umask allowed
            mode = stat.S_IMODE(os.stat(target).st_mode)
            os.chmod(target, mode & ~0o333)
        except OSError:
            log.error("failed to make blob read-only", digest=dgst)
        return dgst

    async def close(self) -> None:
        """Leave the ingest as it is (resumable) and release the ref."""
        fd, self.fd = self.fd, None
        if fd is None:
            _release_writer_slot(self)
            return
        updated = self.updated_at
        path = self.path

        def close_() -> None:
            try:
                os.fsync(fd)
            except OSError as exc:  # what was written stays; the next writer re-reads it
                log.warning("failed to sync an ingest on close", path=path, error=exc.strerror)
            finally:
                os.close(fd)
            try:
                write_atomic(os.path.join(path, "updatedat"), format_rfc3339nano(updated).encode())
            except OSError:  # aborted meanwhile
                pass

        try:
            await asyncio.shield(asyncio.to_thread(close_))
        finally:
            _release_writer_slot(self)
            _unlock(path)


async def init(ic: InitContext) -> LocalStore:
    store = await asyncio.to_thread(LocalStore, ic.root)
    ic.meta.exports["root"] = ic.root
    return store


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.CONTENT, id="content", init=init)]
