"""OCI layer tar streams: applying one onto a directory, and writing one
from the difference between two directories, as containerd's archive
package does (archive/tar.go, tar_unix.go) with continuity's path helpers
(fs.RootPath, fs.Changes).

Apply is a security boundary: the daemon runs as root and the stream is
untrusted. The rules, all containerd's:

- every entry name is cleaned; its parent is resolved with `root_path`,
  a root-scoped join that follows symlinks *lexically inside the root*
  (an absolute link target restarts at the root, `..` stops at the root),
  so `../../etc/x`, `/abs/x` and `evil/etc/x` (with `evil -> /`) all land
  under the root;
- the final component is never followed: whatever sits there (a symlink
  planted by an earlier entry included) is removed before the entry is
  created, files are opened with O_NOFOLLOW, and ownership, xattrs and
  times are set with the no-follow variants;
- a symlink's *target* may be anything (it is data, resolved later inside
  the container);
- a hardlink's target is resolved like a parent path and clamped to the
  root, and the link is made without following a final symlink;
- block and char devices are created only outside a user namespace (as
  containerd's skipFile); fifos always;
- whiteouts (`.wh.<name>`) remove, `.wh..wh..opq` empties the directory of
  everything this layer did not itself unpack; a whiteout whose target is
  not inside its directory is an invalid archive;
- directories get their times after all their contents were written.

The stream is read by tarstream.TarReader, which parses headers the way
Go's archive/tar does (PAX global headers are skipped, as containerd
ignores them); after a GNU sparse member Python's tarfile reads the rest,
and it folds later global headers into the members that follow. Either
way, every name goes through the same confinement.

Per entry the system calls are few: a regular file is created with
O_EXCL|O_NOFOLLOW (only when something is in the way is it lstat'ed and
removed, then created again) and gets its owner, mode and times through
its descriptor; directories and symlinks likewise try the creation first.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import shutil
import stat
import tarfile
import time
from typing import BinaryIO, Callable, Iterator, NamedTuple

import structlog

from pycontainerd.pkg import errdefs
from pycontainerd.plugins.differ import tarstream

log = structlog.get_logger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = WHITEOUT_PREFIX + WHITEOUT_PREFIX
WHITEOUT_OPAQUE_DIR = WHITEOUT_META_PREFIX + ".opq"
PAX_SCHILY_XATTR = "SCHILY.xattr."
USER_XATTR_PREFIX = "user."
CAPABILITY_XATTR = "security.capability"

_MAX_LINKS = 255
_COPY_CHUNK = 1 << 20
_MAX_TIME_NS = (1 << 63) - 1

_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE)
_DEVICES = {tarfile.BLKTYPE: stat.S_IFBLK, tarfile.CHRTYPE: stat.S_IFCHR, tarfile.FIFOTYPE: stat.S_IFIFO}

# what filters and whiteout converters get: a tarstream.Member (or, after a
# sparse member, a tarfile.TarInfo): the same attribute names
Filter = Callable[[tarstream.Member], bool]
ConvertWhiteout = Callable[[tarstream.Member, str], bool]


class ArchiveError(errdefs.ContainerdError):
    """Apply or diff failed; the message says what, containerd's way, and
    crosses the API as is (code Unknown, as containerd's ToGRPC sends an
    error of no known class)."""

    sentinel = ""


def describe(e: BaseException) -> str:
    """An error's text for a message: an OSError's reason without Python's
    "[Errno N]" and the path it carries (which may be the daemon's own);
    what a decompressor or a system call's argument check raises, in the
    words Go's libraries use for the same fault, not Python's."""
    import gzip

    if isinstance(e, gzip.BadGzipFile):
        return "gzip: invalid checksum" if "CRC" in str(e) or "length" in str(e) else "gzip: invalid header"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]  # Go's wording: "no such file or directory"
    if isinstance(e, EOFError):  # a compressed stream cut short
        return "unexpected EOF"
    from pycontainerd.plugins.differ.inflate import DECOMPRESS_ERRORS

    if isinstance(e, DECOMPRESS_ERRORS):
        return "flate: corrupt input"
    if isinstance(e, OverflowError):  # an id or a size no system call takes
        return "invalid argument"
    return str(e)


class InvalidArchive(ArchiveError):
    def __init__(self, what: str):
        super().__init__(f"{what}: invalid archive")


class Cancelled(ArchiveError):
    def __init__(self) -> None:
        super().__init__("context canceled")


# -- Go's path/filepath, for POSIX paths --------------------------------------
# os.path.join drops everything before an absolute component and normpath
# keeps a leading "//": both would change what the confinement computes, so
# the Go semantics are reproduced exactly.


def clean(p: str) -> str:
    if p == "":
        return "."
    out = posixpath.normpath(p)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def join(*elems: str) -> str:
    parts = [e for e in elems if e]
    return clean("/".join(parts)) if parts else ""


def split(p: str) -> tuple[str, str]:
    i = p.rfind("/")
    return p[: i + 1], p[i + 1:]


def base(p: str) -> str:
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p[p.rfind("/") + 1:]


def dirname(p: str) -> str:
    return clean(p[: p.rfind("/") + 1])


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# -- continuity's fs.RootPath ---------------------------------------------------


def _walk_link(root: str, path: str, walked: list[int], dirs: set[str] | None = None) -> tuple[str, bool]:
    """(resolved, was a link): the link target as written when `path`
    (taken relative to root) is a symlink, else `path` made absolute.
    `dirs` (root-relative paths known to be real directories) spares the
    lstat of a prefix seen before, and learns the ones found now."""
    if walked[0] > _MAX_LINKS:
        raise ArchiveError("too many links")
    path = join("/", path)
    if path == "/":
        return path, False
    if dirs is not None and path in dirs:
        return path, False
    real = join(root, path)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return path, False  # not there yet: it will be created, not followed
    if not stat.S_ISLNK(st.st_mode):
        if dirs is not None and stat.S_ISDIR(st.st_mode):
            dirs.add(path)
        return path, False
    target = os.readlink(real)
    walked[0] += 1
    return target, True


def _walk_links(root: str, path: str, walked: list[int], dirs: set[str] | None = None) -> str:
    """One pass over the components of `path`, left to right, each taken
    relative to the root. At the first symlink the pass stops and returns
    the link's target with the rest of the path appended, so every lstat
    goes through prefixes already known not to be symlinks: the kernel
    never follows a link on our behalf (continuity's walkLinks carries on
    through it, which can read the host's filesystem; the result is the
    same root-scoped path wherever the host does not interfere)."""
    comps = [c for c in path.split("/") if c]
    cur = "/"
    for i, name in enumerate(comps):
        if dirs is not None and name not in (".", ".."):
            nxt = cur + name if cur == "/" else cur + "/" + name
            if nxt in dirs:  # a directory this apply has seen: no lstat, no path cleaning
                cur = nxt
                continue
        target, is_link = _walk_link(root, join(cur, name), walked, dirs)
        if not is_link:
            cur = target
            continue
        nxt = target if target.startswith("/") else join(cur, target)
        return join(nxt, *comps[i + 1:])
    return cur


def root_path(root: str, path: str, dirs: set[str] | None = None) -> str:
    """Join `path` to `root`, evaluating every symlink on the way as if
    `root` were `/`: the result is always `root` or below it. `dirs` is a
    cache of root-relative paths known to be directories (not symlinks);
    its owner must drop a path from it whenever that path is removed or
    replaced (the applier does)."""
    if path == "":
        return root
    if dirs is not None:  # a directory seen before (entries are cleaned: no "." or ".." can hit)
        key = "/" + path.strip("/")
        if key in dirs:
            return key if root == "/" else root + key
    walked = [0]
    while True:
        before = walked[0]
        path = _walk_links(root, path, walked, dirs)
        if before == walked[0]:
            anchored = join("/", path)
            if path == anchored:
                out = join(root, anchored)
                if not _inside(root, out):  # cannot happen: defence in depth
                    raise InvalidArchive(f"path {path!r} escapes root")
                return out
            path = anchored


def hardlink_root_path(root: str, linkname: str, dirs: set[str] | None = None) -> str:
    """Where a hardlink entry's target lives: its parent resolved inside the
    root, its last component not followed (a hardlink to a symlink links the
    symlink), clamped to the root."""
    ppath, name = split(linkname)
    ppath = root_path(root, ppath, dirs)
    target = join(ppath, name)
    if not _inside(root, target):
        target = root
    return target


# -- environment -----------------------------------------------------------------


@functools.cache
def running_in_userns() -> bool:
    """containerd's userns.RunningInUserNS: anything but the full identity
    uid map means a user namespace."""
    try:
        with open("/proc/self/uid_map") as f:
            line = f.readline()
    except OSError:
        return False
    parts = line.split()
    try:
        a, b, c = (int(x) for x in parts[:3])
    except ValueError:
        return True
    return not (a == 0 and b == 0 and c == 4294967295)


# -- small filesystem helpers ------------------------------------------------------


def remove_all(path: str) -> None:
    """os.RemoveAll: never follows a symlink, absent is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # fd-based on Linux: immune to symlink swaps
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _mkdir(path: str, mode: int) -> None:
    os.mkdir(path, mode)
    os.chmod(path, mode)  # the umask must not win


def _lchmod(path: str, mode: int) -> None:
    if not stat.S_ISLNK(os.lstat(path).st_mode):
        os.chmod(path, mode)


def _chtimes(path: str, atime_ns: int, mtime_ns: int) -> None:
    try:
        os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)
    except OSError as e:
        raise ArchiveError(f"failed call to UtimesNanoAt for {path}: {describe(e)}") from e


def _bound(ns: int) -> int:
    return 0 if ns < 0 or ns > _MAX_TIME_NS else ns


def _parse_pax_time(value: str | None) -> int | None:
    """A PAX time record ("secs[.frac]", maybe negative) in nanoseconds."""
    if not value:
        return None
    neg = value.startswith("-")
    secs, _, frac = value.lstrip("-").partition(".")
    try:
        ns = int(secs or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except ValueError:
        return None
    return -ns if neg else ns


def _header_times(hdr: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns as containerd sets them: atime is the later of
    the two, both clamped to [epoch, max] else the epoch."""
    mtime = _parse_pax_time(hdr.pax_headers.get("mtime"))
    if mtime is None:
        mtime = int(hdr.mtime) * 1_000_000_000
    atime = _parse_pax_time(hdr.pax_headers.get("atime"))
    latest = mtime if atime is None or atime < mtime else atime
    return _bound(latest), _bound(mtime)


def _setxattr(path: str, key: str, value: bytes) -> None:
    if key.startswith("trusted."):
        raise OSError(errno.ENOTSUP, "admin attributes from archive not supported")
    os.setxattr(path, key, value, follow_symlinks=False)


def _getxattr(path: str, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def copy_dir_info(st: os.stat_result, path: str) -> None:
    """Give a directory the owner, mode and times of `st` (mkparent with
    overlay lowerdirs: an implied parent inherits the lower one's)."""
    try:
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        cur = os.lstat(path)
        if (cur.st_uid, cur.st_gid) != (st.st_uid, st.st_gid):
            raise
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_up_xattrs(dst: str, src: str) -> None:
    try:
        keys = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            return
        raise
    for key in keys:
        if key.startswith("trusted."):
            continue
        data = _getxattr(src, key)
        if data is None:
            continue
        try:
            os.setxattr(dst, key, data, os.XATTR_CREATE, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.ENODATA, errno.EEXIST):
                raise


# -- whiteouts --------------------------------------------------------------------------


def validate_whiteout(path: str) -> None:
    name = base(path)
    if name == WHITEOUT_OPAQUE_DIR or not name.startswith(WHITEOUT_PREFIX):
        return
    parent = dirname(path)
    original = join(parent, name[len(WHITEOUT_PREFIX):])
    if not original.startswith(parent.rstrip("/") + "/"):
        raise InvalidArchive(f"invalid whiteout name: {name}")


def overlay_convert_whiteout(hdr: tarfile.TarInfo, path: str) -> bool:
    """Applying straight into an overlay upperdir: whiteouts become the
    0/0 char devices and opaque markers the `trusted.overlay.opaque` xattr
    that overlayfs itself understands (archive.OverlayConvertWhiteout)."""
    name = base(path)
    if not name.startswith(WHITEOUT_PREFIX):  # nearly every entry: no parent computed
        return True
    parent = dirname(path)
    if name == WHITEOUT_OPAQUE_DIR:
        os.setxattr(parent, "trusted.overlay.opaque", b"y", follow_symlinks=False)
        return False
    if name.startswith(WHITEOUT_PREFIX):
        original = join(parent, name[len(WHITEOUT_PREFIX):])
        os.mknod(original, stat.S_IFCHR, 0)
        os.chown(original, hdr.uid, hdr.gid, follow_symlinks=False)
        return False
    return True


def aufs_convert_whiteout(hdr: tarfile.TarInfo, path: str) -> bool:
    return True


# -- Apply --------------------------------------------------------------------------------


class _Applier:
    def __init__(self, root: str, filter_: Filter | None, convert: ConvertWhiteout | None,
                 parents: tuple[str, ...], cancelled: Callable[[], bool] | None):
        self.root = clean(root)
        self.filter = filter_
        self.convert = convert or self._remove_whiteout
        self.parents = tuple(parents)
        self.cancelled = cancelled or (lambda: False)
        self.unpacked: set[str] = set()
        # root-relative paths this apply has seen to be real directories:
        # resolving the next entry's parent then needs no lstat per
        # component. A path leaves the cache whenever it is removed or
        # replaced (and with it everything below); a whiteout empties it.
        self.dirs: set[str] = set()

    def _rel(self, path: str) -> str:
        return path[len(self.root):] or "/"

    def _forget(self, path: str) -> None:
        """`path` is being removed or replaced: no cached directory at or
        below it can be trusted any more."""
        rel = self._rel(path)
        self.dirs.discard(rel)
        prefix = rel.rstrip("/") + "/"
        stale = [d for d in self.dirs if d.startswith(prefix)]
        self.dirs.difference_update(stale)

    # whiteouts by removal: containerd's default ConvertWhiteout
    def _remove_whiteout(self, hdr: tarfile.TarInfo, path: str) -> bool:
        name = base(path)
        if not name.startswith(WHITEOUT_PREFIX):
            return True
        parent = dirname(path)
        if name == WHITEOUT_OPAQUE_DIR:
            os.lstat(parent)
            self._empty_opaque(parent)
            return False
        if name.startswith(WHITEOUT_PREFIX):
            remove_all(join(parent, name[len(WHITEOUT_PREFIX):]))
            return False
        return True

    def _empty_opaque(self, top: str) -> None:
        """Remove everything below `top` that this layer did not unpack,
        never descending through a symlink."""
        stack = [top]
        while stack:
            cur = stack.pop()
            try:
                names = sorted(os.listdir(cur))
            except FileNotFoundError:
                continue
            for name in names:
                p = join(cur, name)
                if p not in self.unpacked:
                    remove_all(p)
                    continue
                try:
                    if stat.S_ISDIR(os.lstat(p).st_mode):
                        stack.append(p)
                except FileNotFoundError:
                    pass

    def _mkparent(self, path: str) -> None:
        """Create the missing directories down to `path` (0755, or the
        attributes of the same directory in an overlay lowerdir)."""
        if not _inside(self.root, path):
            raise InvalidArchive(f"parent {path!r} outside root")
        if self._rel(path) in self.dirs:
            return
        missing: list[str] = []
        cur = path
        while True:
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                missing.append(cur)
                i = cur.rfind("/")
                if i > len(self.root):
                    cur = cur[:i]
                    continue
                break
            if not stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"mkparent {cur}: not a directory")
            break
        for p in reversed(missing):
            self._mkparent_one(p)

    def _mkparent_one(self, path: str) -> None:
        try:
            _mkdir(path, 0o755)
        except OSError:
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    return
            except OSError:
                pass
            raise
        for lower in self.parents:
            ppath = root_path(lower, path[len(self.root):])
            try:
                st = os.lstat(ppath)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # replaced in a lower layer: keep the defaults
            copy_dir_info(st, path)
            copy_up_xattrs(path, ppath)
            return
        log.debug("parent directory not found: default permissions(0755) used", path=path)

    def _skip(self, hdr: tarfile.TarInfo) -> bool:
        return hdr.type in (tarfile.BLKTYPE, tarfile.CHRTYPE) and running_in_userns()

    def run(self, stream: BinaryIO) -> int:
        reader = tarstream.TarReader(stream)
        size = 0
        dirs: list[tuple[str, int, int]] = []
        root = self.root
        while True:
            if self.cancelled():
                raise Cancelled()
            hdr = reader.next()
            if hdr is None:
                break
            size += hdr.size
            name = clean(hdr.name)
            hdr.name = name
            if self.filter is not None and not self.filter(hdr):
                continue
            if self._skip(hdr):
                log.warning("file ignored: archive may not be supported on system", file=name)
                continue
            ppath, last = split(name)
            try:
                ppath = root_path(root, ppath, self.dirs)
            except (OSError, ArchiveError) as e:
                raise ArchiveError(f"failed to get root path: {describe(e)}") from e
            if last and last != "." and last != "..":  # a plain name on a clean parent: no cleaning needed
                path = ppath + "/" + last if ppath != "/" else "/" + last
            else:
                path = join(ppath, join("/", last))
            if path == root:
                log.debug("file ignored: resolved to root", file=name)
                continue
            if not _inside(root, path):  # cannot happen: defence in depth
                raise InvalidArchive(f"entry {name!r} escapes root")
            if ppath != root:
                self._mkparent(ppath if last else dirname(path))
            validate_whiteout(path)
            if base(path).startswith(WHITEOUT_PREFIX):
                self.dirs.clear()  # whiteouts remove things: trust nothing cached
            try:
                write = self.convert(hdr, path)
            except OSError as e:
                raise ArchiveError(f"failed to convert whiteout file {name!r}: {describe(e)}") from e
            if not write:
                continue
            if hdr.type != tarfile.DIRTYPE:
                self.dirs.discard(self._rel(path))
            self._create(path, hdr, reader)
            if hdr.type == tarfile.DIRTYPE:
                dirs.append((name, *_header_times(hdr)))
            self.unpacked.add(path)
        # directory times last: creating their contents moved them
        for name, atime, mtime in dirs:
            _chtimes(root_path(root, name, self.dirs), atime, mtime)
        return size

    def _clear(self, path: str, entry_is_dir: bool) -> bool:
        """Make way for an entry at `path`: whatever sits there goes (a
        symlink included, never followed), except a directory where the
        entry is a directory too, which is merged. True when it stays."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if entry_is_dir and stat.S_ISDIR(st.st_mode):
            return True
        self._forget(path)
        remove_all(path)
        return False

    def _create(self, path: str, hdr, reader: tarstream.TarReader) -> None:
        """Create the entry, then its owner, xattrs, mode and times. The
        common kinds try the creation first and clear the path only when
        something is there (O_EXCL, EEXIST): one lstat fewer per entry."""
        mode = hdr.mode & 0o7777
        kind = hdr.type
        if kind in _REGULAR:
            self._create_file(path, hdr, mode, reader)
            return
        if kind == tarfile.DIRTYPE:
            try:
                os.mkdir(path, mode)  # the mode again below, after the chown: the umask must not win
            except FileExistsError:
                if not self._clear(path, True):
                    os.mkdir(path, mode)
        elif kind == tarfile.SYMTYPE:
            try:
                os.symlink(hdr.linkname, path)
            except FileExistsError:
                self._clear(path, False)
                os.symlink(hdr.linkname, path)
        else:
            self._clear(path, False)
            if kind in _DEVICES:
                os.mknod(path, mode | _DEVICES[kind], os.makedev(hdr.devmajor, hdr.devminor))
            elif kind == tarfile.LNKTYPE:
                target = hardlink_root_path(self.root, hdr.linkname, self.dirs)
                # never follow: a hardlink to a symlink links the symlink itself
                os.link(target, path, follow_symlinks=False)
            else:
                raise ArchiveError(f"unhandled tar header type {kind[0] if kind else 0}")
        self._chown(path, hdr, None)
        self._xattrs(path, hdr)
        # after the chown, which clears setuid/setgid
        if kind == tarfile.DIRTYPE:
            os.chmod(path, mode)  # a directory made or found (lstat) just now: not a symlink
        elif kind != tarfile.SYMTYPE:
            _lchmod(path, mode)  # a hardlink may be a link to a symlink
        _chtimes(path, *_header_times(hdr))

    def _create_file(self, path: str, hdr, mode: int, reader: tarstream.TarReader) -> None:
        """A regular file, set up through its descriptor (no path lookups
        after the open, and nothing followed)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            self._clear(path, False)
            fd = os.open(path, flags, 0o600)
        try:
            src = reader.data(hdr)
            while True:
                if self.cancelled():
                    raise Cancelled()
                chunk = src.read(_COPY_CHUNK)
                if not chunk:
                    break
                n = os.write(fd, chunk)
                if n < len(chunk):
                    view = memoryview(chunk)
                    while n < len(chunk):
                        n += os.write(fd, view[n:])
            self._chown(path, hdr, fd)
            self._xattrs(path, hdr)
            os.fchmod(fd, mode)  # after the chown, which clears setuid/setgid
            atime, mtime = _header_times(hdr)
            try:
                os.utime(fd, ns=(atime, mtime))
            except OSError as e:
                raise ArchiveError(f"failed call to UtimesNanoAt for {path}: {describe(e)}") from e
        finally:
            os.close(fd)

    @staticmethod
    def _chown(path: str, hdr, fd: int | None) -> None:
        try:
            try:
                if fd is None:
                    os.chown(path, hdr.uid, hdr.gid, follow_symlinks=False)
                else:
                    os.fchown(fd, hdr.uid, hdr.gid)
            except OverflowError:  # an id past 32 bits: the kernel's answer to such an id
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from None
        except OSError as e:
            msg = f'failed to Lchown "{path}" for UID {hdr.uid}, GID {hdr.gid}: {describe(e)}'
            if e.errno == errno.EINVAL and running_in_userns():
                msg += " (Hint: try increasing the number of subordinate IDs in /etc/subuid and /etc/subgid)"
            raise ArchiveError(msg) from e

    @staticmethod
    def _xattrs(path: str, hdr) -> None:
        for key, value in hdr.pax_headers.items():
            if not key.startswith(PAX_SCHILY_XATTR):
                continue
            xkey = key[len(PAX_SCHILY_XATTR):]
            try:
                _setxattr(path, xkey, value.encode("utf-8", "surrogateescape"))
            except OSError as e:
                if e.errno == errno.EPERM and xkey.startswith(USER_XATTR_PREFIX):
                    # user.* exists only on regular files and directories
                    try:
                        m = os.lstat(path).st_mode
                    except OSError:
                        m = 0
                    if m and not (stat.S_ISREG(m) or stat.S_ISDIR(m)):
                        log.warning("ignored xattr in archive", xattr=xkey, error=str(e))
                        continue
                if e.errno == errno.ENOTSUP:
                    log.warning("ignored xattr in archive", xattr=xkey, error=str(e))
                    continue
                raise ArchiveError(f'failed to setxattr "{path}" for key "{xkey}": {describe(e)}') from e


def apply(root: str, stream: BinaryIO, *, filter: Filter | None = None,
          convert_whiteout: ConvertWhiteout | None = None, parents: tuple[str, ...] | list[str] = (),
          cancelled: Callable[[], bool] | None = None) -> int:
    """Apply the uncompressed OCI layer tar read from `stream` onto the
    directory `root`; returns the sum of the entries' sizes (containerd's
    archive.Apply). Blocking: run it in a thread."""
    from pycontainerd.plugins.differ.inflate import DECOMPRESS_ERRORS

    try:
        return _Applier(root, filter, convert_whiteout, tuple(parents), cancelled).run(stream)
    except tarstream.StreamError as e:
        raise ArchiveError(e.message) from None
    except tarfile.TarError as e:  # inside a sparse member tarfile reads: truncated data and the like
        raise _tar_error(e) from e
    except DECOMPRESS_ERRORS as e:  # the gzip stream under the tar is corrupt
        raise ArchiveError(describe(e)) from e


def _tar_error(e: tarfile.TarError) -> ArchiveError:
    """tarfile's complaint as Go's archive/tar words it; a corrupt gzip
    stream under it (tarfile says "zlib error: Error -3 while ...") is
    what Go's flate reader says."""
    import zlib

    from pycontainerd.plugins.differ.inflate import DECOMPRESS_ERRORS

    if isinstance(e.__context__, DECOMPRESS_ERRORS) or str(e).startswith("zlib error"):
        return ArchiveError(describe(zlib.error()))
    return ArchiveError(f"archive/tar: {e}")


# -- fs.Changes ------------------------------------------------------------------------------

UNMODIFIED, ADD, MODIFY, DELETE = 0, 1, 2, 3
CHANGE_NAMES = {UNMODIFIED: "unmodified", ADD: "add", MODIFY: "modify", DELETE: "delete"}


class _Entry(NamedTuple):
    path: str  # "/a/b", relative to the walked root
    st: os.stat_result
    full: str


def _sorted_names(path: str) -> list[str]:
    return sorted(os.listdir(path), key=os.fsencode)  # Go sorts bytes


def _walk(root: str) -> Iterator[_Entry]:
    """filepath.Walk without the root: pre-order, names in byte order,
    symlinks not followed."""
    if not stat.S_ISDIR(os.lstat(root).st_mode):
        return
    stack = [("/", iter(_sorted_names(root)))]
    while stack:
        prefix, it = stack[-1]
        name = next(it, None)
        if name is None:
            stack.pop()
            continue
        rel = prefix + name
        full = root + rel if root != "/" else rel
        st = os.lstat(full)
        yield _Entry(rel, st, full)
        if stat.S_ISDIR(st.st_mode):
            stack.append((rel + "/", iter(_sorted_names(full))))


def _compare_key(path: str) -> bytes:
    """continuity's directoryCompare: bytes, with the separator sorting
    before every other byte, so a directory's children come right after it."""
    return os.fsencode(path).replace(b"/", b"\x00")


def _same_file(a: _Entry, b: _Entry) -> bool:
    s1, s2 = a.st, b.st
    if (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino):
        return True
    if (s1.st_mode, s1.st_uid, s1.st_gid, s1.st_rdev) != (s2.st_mode, s2.st_uid, s2.st_gid, s2.st_rdev):
        return False
    if _getxattr(a.full, CAPABILITY_XATTR) != _getxattr(b.full, CAPABILITY_XATTR):
        return False
    if stat.S_ISDIR(s1.st_mode):
        return True
    if s1.st_size != s2.st_size:
        return False
    sec1, ns1 = divmod(s1.st_mtime_ns, 1_000_000_000)
    sec2, ns2 = divmod(s2.st_mtime_ns, 1_000_000_000)
    if sec1 != sec2:
        return False
    if ns1 == 0 and ns2 == 0:
        # both may have been truncated by a tar round trip: look inside
        if stat.S_ISLNK(s1.st_mode):
            return os.readlink(a.full) == os.readlink(b.full)
        if s1.st_size == 0:
            return True
        return _same_content(a.full, b.full)
    return ns1 == ns2


def _same_content(p1: str, p2: str) -> bool:
    with open(p1, "rb") as f1, open(p2, "rb") as f2:
        while True:
            b1 = f1.read(32 * 1024)
            b2 = f2.read(32 * 1024)
            if b1 != b2:
                return False
            if not b1:
                return True


def _is_linked(st: os.stat_result) -> bool:
    return not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1


def changes(lower: str, upper: str) -> Iterator[tuple[int, str, os.stat_result | None]]:
    """(kind, "/path", upper stat or None) in apply order, as continuity's
    fs.Changes with its double walk: a removed directory yields one delete,
    a directory replaced by a file hides its children's deletes, opaque
    directories are not special. `lower == ""` lists all of `upper` as adds."""
    if lower == "":
        for e in _walk(upper):
            yield ADD, e.path, e.st
        return
    ia, ib = _walk(lower), _walk(upper)
    f1 = next(ia, None)
    f2 = next(ib, None)
    rmdir = ""
    while f1 is not None or f2 is not None:
        if f1 is None:
            kind = ADD
        elif f2 is None:
            kind = DELETE
        else:
            k1, k2 = _compare_key(f1.path), _compare_key(f2.path)
            kind = DELETE if k1 < k2 else ADD if k1 > k2 else MODIFY
        if kind == ADD:
            rmdir = ""
            path, st = f2.path, f2.st
            f2 = next(ib, None)
        elif kind == DELETE:
            if rmdir and f1.path.startswith(rmdir):
                f1 = next(ia, None)
                continue
            if stat.S_ISDIR(f1.st.st_mode):
                rmdir = f1.path + "/"
            elif rmdir:
                rmdir = ""
            path, st = f1.path, None
            f1 = next(ia, None)
        else:
            same = _same_file(f1, f2)
            if stat.S_ISDIR(f1.st.st_mode) and not stat.S_ISDIR(f2.st.st_mode):
                rmdir = f1.path + "/"
            elif rmdir:
                rmdir = ""
            path, st = f2.path, f2.st
            f1 = next(ia, None)
            f2 = next(ib, None)
            if same:
                if not _is_linked(st):
                    continue
                kind = UNMODIFIED
        yield kind, path, st


# -- ChangeWriter ------------------------------------------------------------------------------


class ChangeWriter:
    """Turns changes into an OCI layer tar on `out` (containerd's
    archive.ChangeWriter): whiteouts for deletions, parents before their
    children, hardlinks kept as links, `security.capability` kept, owner
    names never looked up, times truncated to the second."""

    def __init__(self, out: BinaryIO, source: str, whiteout_time: float | None = None):
        self.out = out
        self.source = source
        self.whiteout_mtime = round(time.time() if whiteout_time is None else whiteout_time)
        self.inode_src: dict[int, str] = {}
        self.inode_refs: dict[int, list[str]] = {}
        self.added_dirs: set[str] = set()

    def _write_header(self, ti: tarfile.TarInfo) -> None:
        self.out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def handle(self, kind: int, p: str, st: os.stat_result | None) -> None:
        if kind == DELETE:
            whiteout = join(dirname(p), WHITEOUT_PREFIX + base(p))
            ti = tarfile.TarInfo(whiteout[1:] if whiteout.startswith("/") else whiteout)
            ti.type, ti.size, ti.mode, ti.mtime = tarfile.REGTYPE, 0, 0, self.whiteout_mtime
            ti.uname = ti.gname = ""
            self._include_parents(ti)
            self._write_header(ti)
            return

        assert st is not None
        source = join(self.source, p)
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return  # sockets are not archived
        name = p[1:] if p.startswith("/") else p
        ti = tarfile.TarInfo(name)
        ti.mode = stat.S_IMODE(mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = st.st_mtime_ns // 1_000_000_000
        if stat.S_ISREG(mode):
            ti.type, ti.size = tarfile.REGTYPE, st.st_size
        elif stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            ti.name = name + "/"
        elif stat.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(source)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
        else:
            raise ArchiveError(f"unsupported file type for {p}")

        extra_links: list[str] | None = None
        if _is_linked(st):
            src = self.inode_src.get(st.st_ino)
            if src is not None:
                ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, src, 0
            else:
                if kind == UNMODIFIED:
                    # unchanged, but a changed link to it may come later
                    self.inode_refs.setdefault(st.st_ino, []).append(ti.name)
                    return
                self.inode_src[st.st_ino] = ti.name
                extra_links = self.inode_refs.pop(st.st_ino, None)
        elif kind == UNMODIFIED:
            return

        cap = _getxattr(source, CAPABILITY_XATTR)
        if cap:
            ti.pax_headers = {PAX_SCHILY_XATTR + CAPABILITY_XATTR: cap.decode("utf-8", "surrogateescape")}

        self._include_parents(ti)
        self._write_header(ti)
        if ti.type == tarfile.REGTYPE and ti.size > 0:
            self._copy_file(source, ti.size)

        if extra_links:
            target = ti.name
            for extra in extra_links:
                ti.name, ti.type, ti.linkname, ti.size = extra, tarfile.LNKTYPE, target, 0
                self._include_parents(ti)
                self._write_header(ti)

    def _copy_file(self, source: str, size: int) -> None:
        written = 0
        with open(source, "rb") as f:
            while True:
                chunk = f.read(_COPY_CHUNK)
                if not chunk:
                    break
                if written + len(chunk) > size:
                    raise ArchiveError("archive/tar: write too long")
                self.out.write(chunk)
                written += len(chunk)
        if written != size:
            raise ArchiveError("short write copying file")
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self.out.write(b"\0" * pad)

    def _include_parents(self, ti: tarfile.TarInfo) -> None:
        name = ti.name.rstrip("/")
        parent = dirname(name)
        if join(self.source, name) != self.source and join(self.source, parent) != self.source:
            if parent not in self.added_dirs:
                self.added_dirs.add(parent)
                st = os.stat(join(self.source, parent))
                self.handle(MODIFY, parent, st)
        if ti.type == tarfile.DIRTYPE:
            self.added_dirs.add(name)

    def close(self) -> None:
        self.out.write(b"\0" * (2 * tarfile.BLOCKSIZE))


def write_diff(out: BinaryIO, lower: str, upper: str, *, cancelled: Callable[[], bool] | None = None) -> None:
    """Write the OCI layer that turns `lower` into `upper` (containerd's
    archive.WriteDiff with the naive double walk). Blocking."""
    cw = ChangeWriter(out, upper)
    for kind, path, st in changes(lower, upper):
        if cancelled is not None and cancelled():
            raise Cancelled()
        cw.handle(kind, path, st)
    cw.close()
