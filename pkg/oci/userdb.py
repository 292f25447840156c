"""Users and groups of a container's root filesystem: /etc/passwd and
/etc/group read the way runc's libcontainer/user parses them, opened
through `root_path`, which resolves symlinks as if `root` were `/` (as
continuity's fs.RootPath does), so an image whose /etc/passwd is a link to
/etc/shadow or to ../../host/file can never make the client read a host file.
"""

from __future__ import annotations

import errno
import os
import re

MAX_SYMLINKS = 255
MAX_FILE = 16 << 20  # a passwd or group file larger than this is refused


class UserDBError(Exception):
    """A lookup that failed, worded as containerd's spec options word it."""


def root_path(root: str, path: str) -> str:
    """`path` inside `root`, every symlink followed as if `root` were the
    filesystem's root: the answer never leaves `root`."""
    root = os.path.abspath(root)
    todo = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            done.append(part)
            continue
        if not os.path.stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p] + todo
    return os.path.join(root, *done)


def _read_lines(root: str, name: str) -> list[str]:
    """The lines of /etc/<name> in root; FileNotFoundError when it is absent."""
    fd = os.open(root_path(root, "/etc/" + name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not os.path.stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserDBError(f"/etc/{name} is not a regular file")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise UserDBError(f"/etc/{name} is larger than {MAX_FILE} bytes")
    return [line.strip() for line in data.decode("utf-8", errors="replace").splitlines()]


def _int(text: str) -> int:
    """Go's strconv.Atoi as libcontainer uses it: 0 when it is not a number."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) and abs(int(text)) < 2**63 else 0


def _passwd(root: str) -> list[tuple[str, int, int]]:
    """(name, uid, gid) of each entry."""
    out = []
    for line in _read_lines(root, "passwd"):
        if not line:
            continue
        f = line.split(":") + [""] * 4
        out.append((f[0], _int(f[2]), _int(f[3])))
    return out


def _group(root: str) -> list[tuple[str, int, list[str]]]:
    """(name, gid, members) of each entry; comments skipped."""
    out = []
    for line in _read_lines(root, "group"):
        if not line or line.startswith("#"):
            continue
        f = line.split(":") + [""] * 4
        out.append((f[0], _int(f[2]), f[3].split(",") if f[3] else []))
    return out


def user_by_uid(root: str, uid: int) -> tuple[int, int] | None:
    """(uid, gid) of the first user with this uid; None when there is no
    such user or no passwd file (containerd then uses gid 0)."""
    try:
        users = _passwd(root)
    except FileNotFoundError:
        return None
    for _, u, g in users:
        if u == uid:
            return u, g
    return None


def user_by_name(root: str, name: str) -> tuple[int, int]:
    try:
        users = _passwd(root)
    except FileNotFoundError:
        raise UserDBError("open /etc/passwd: no such file or directory") from None
    for n, u, g in users:
        if n == name:
            return u, g
    raise UserDBError("no users found")


def gid_by_name(root: str, name: str) -> int:
    try:
        groups = _group(root)
    except FileNotFoundError:
        raise UserDBError("open /etc/group: no such file or directory") from None
    for n, g, _ in groups:
        if n == name:
            return g
    raise UserDBError("no groups found")


def additional_gids(root: str, userstr: str) -> list[int] | None:
    """containerd's WithAdditionalGIDs: the gids of the groups that list
    the user (a name, or a uid whose name is looked up) as a member, its
    own-named group excluded. None when a file is missing or the uid has
    no user (the spec then keeps just its primary gid)."""
    username = userstr
    if re.fullmatch(r"[+-]?[0-9]+", userstr):
        try:
            users = _passwd(root)
        except FileNotFoundError:
            return None
        names = [n for n, u, _ in users if u == int(userstr)]
        if not names:
            return None
        username = names[0]
    try:
        groups = _group(root)
    except FileNotFoundError:
        return None
    return [g for n, g, members in groups if n != username and username in members]
