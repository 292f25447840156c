"""The OCI runtime spec as containerd 1.6's client builds it.

A spec is a plain dict in the runtime-spec's JSON shape. `default_spec`
is containerd's default Linux spec (oci.populateDefaultUnixSpec); the
`with_*` functions are containerd's spec options (oci/spec_opts.go), each
a callable `(spec, ctx)` that edits the spec in place, applied in order by
`generate`. `to_json` writes it the way Go's encoding/json does (struct
field order, omitempty, Go's string escaping), so the bytes pyctr sends
are the bytes ctr sends for the same flags.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .userdb import additional_gids, gid_by_name, user_by_name, user_by_uid

SPEC_VERSION = "1.0.2-dev"  # runtime-spec's specs.Version in Debian's containerd 1.6
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RWM = "rwm"

DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
NAMESPACES = ("pid", "ipc", "uts", "mount", "network")
DEFAULT_MOUNTS = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/run", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
)
# WithDefaultUnixDevices: null, random, full, tty, zero, urandom, console, every pts, ptmx
DEFAULT_UNIX_DEVICES = ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2))


class SpecError(Exception):
    """A spec option that cannot be applied (worded as containerd words it)."""


@dataclass
class SpecContext:
    """What options need beyond the spec: the container's namespace and
    id, and (for user and group names) a way to read its root filesystem.
    `with_rootfs(fn)` calls `fn(root_directory)` with the container's
    rootfs mounted read-only and returns its result."""

    namespace: str
    id: str = ""
    with_rootfs: Callable[[Callable[[str], Any]], Any] | None = None


SpecOpt = Callable[[dict, SpecContext], None]


def default_spec(namespace: str, container_id: str = "") -> dict:
    """containerd's default Linux spec for a container in `namespace`."""
    if not namespace:
        raise SpecError("namespace is required: failed precondition")
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": SPEC_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": d, "type": t, "source": s, "options": list(o)} for d, t, s, o in DEFAULT_MOUNTS],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": RWM}]},
            "cgroupsPath": os.path.normpath(os.path.join("/", namespace, container_id)),
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def generate(ctx: SpecContext, *opts: SpecOpt) -> dict:
    """oci.GenerateSpec: the default spec, then each option in order."""
    spec = default_spec(ctx.namespace, ctx.id)
    return apply(spec, ctx, *opts)


def apply(spec: dict, ctx: SpecContext, *opts: SpecOpt) -> dict:
    for opt in opts:
        opt(spec, ctx)
    return spec


# -- helpers mirroring containerd's set* functions ---------------------------------

def _process(s: dict) -> dict:
    return s.setdefault("process", {"user": {"uid": 0, "gid": 0}, "cwd": ""})


def _linux(s: dict) -> dict:
    return s.setdefault("linux", {})


def _resources(s: dict) -> dict:
    return _linux(s).setdefault("resources", {})


def _cpu(s: dict) -> dict:
    return _resources(s).setdefault("cpu", {})


def replace_or_append_env(defaults: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """containerd's replaceOrAppendEnvValues: an override `K=V` replaces K,
    a bare `K` removes it, anything else is appended."""
    results = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(results)}
    for value in overrides:
        if "=" not in value:
            if value in index:
                results[index[value]] = ""
            continue
        key = value.split("=", 1)[0]
        if key in index:
            results[index[key]] = value
        else:
            results.append(value)
    return [r for r in results if r != ""]


# -- the options ctr run uses ------------------------------------------------------

def with_default_spec() -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        s.clear()
        s.update(default_spec(ctx.namespace, ctx.id))
    return opt


def with_default_unix_devices(s: dict, ctx: SpecContext) -> None:
    devices = _resources(s).setdefault("devices", [])
    for major, minor in DEFAULT_UNIX_DEVICES:
        entry: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": RWM}
        if minor is not None:
            entry["minor"] = minor
        devices.append(entry)


def with_env(env: Iterable[str]) -> SpecOpt:
    env = list(env)

    def opt(s: dict, ctx: SpecContext) -> None:
        if env:
            p = _process(s)
            p["env"] = replace_or_append_env(p.get("env") or [], env)
    return opt


def read_env_file(path: str) -> list[str]:
    """The lines of an env file, as WithEnvFile reads them (every line,
    blank ones included; a blank line is then dropped by the env merge)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [line.rstrip("\n").removesuffix("\r") for line in f]


def with_env_file(path: str) -> SpecOpt:
    lines = read_env_file(path)
    return with_env(lines)


def with_process_args(*args: str) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        p = _process(s)
        p["args"] = list(args)
        p.pop("commandLine", None)
    return opt


def with_process_cwd(cwd: str) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        _process(s)["cwd"] = cwd
    return opt


def with_tty(s: dict, ctx: SpecContext) -> None:
    p = _process(s)
    p["terminal"] = True
    if "linux" in s:
        p["env"] = [*(p.get("env") or []), "TERM=xterm"]


def with_mounts(mounts: Iterable[dict]) -> SpecOpt:
    mounts = [dict(m) for m in mounts]

    def opt(s: dict, ctx: SpecContext) -> None:
        s["mounts"] = [*(s.get("mounts") or []), *copy.deepcopy(mounts)]
    return opt


def with_host_namespace(ns_type: str) -> SpecOpt:
    """Leave the host's namespace of this type shared (drop it from the list)."""
    def opt(s: dict, ctx: SpecContext) -> None:
        namespaces = _linux(s).get("namespaces") or []
        for i, n in enumerate(namespaces):
            if n.get("type") == ns_type:
                del namespaces[i]
                return
    return opt


def _host_file_mount(path: str) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        s["mounts"] = [*(s.get("mounts") or []),
                       {"destination": path, "type": "bind", "source": path, "options": ["rbind", "ro"]}]
    return opt


with_host_hosts_file = _host_file_mount("/etc/hosts")
with_host_resolvconf = _host_file_mount("/etc/resolv.conf")


def with_host_network() -> list[SpecOpt]:
    """What ctr's --net-host adds: the host's network namespace, its
    /etc/hosts and /etc/resolv.conf, and HOSTNAME set to the host's name."""
    return [with_host_namespace("network"), with_host_hosts_file, with_host_resolvconf,
            with_env([f"HOSTNAME={socket.gethostname()}"])]


def with_rootfs_readonly(s: dict, ctx: SpecContext) -> None:
    s.setdefault("root", {"path": ""})["readonly"] = True


def with_rootfs_path(path: str) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        s.setdefault("root", {"path": ""})["path"] = path
    return opt


def with_memory_limit(limit: int) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        if "linux" in s:
            _resources(s).setdefault("memory", {})["limit"] = int(limit)
    return opt


def with_cpu_shares(shares: int) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        _cpu(s)["shares"] = int(shares)
    return opt


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        cpu = _cpu(s)
        cpu["quota"] = int(quota)
        cpu["period"] = int(period)
    return opt


def cpus_to_cfs(cpus: float) -> tuple[int, int]:
    """ctr's --cpus: a quota in a 100 ms period (Go truncates the product)."""
    return int(cpus * 100000.0), 100000


def with_annotations(annotations: dict[str, str]) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        s.setdefault("annotations", {}).update(annotations)
    return opt


def with_new_privileges(s: dict, ctx: SpecContext) -> None:
    _process(s)["noNewPrivileges"] = False


# -- privileged -------------------------------------------------------------------------

# every capability by its bit number (containerd's pkg/cap list, kernel 5.9)
KNOWN_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# what containerd's host device walk leaves out
SKIPPED_DEV_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def current_capabilities(status_path: str = "/proc/self/status") -> list[str]:
    """containerd's cap.Current: the names of this process's effective
    capabilities, in bit order (bits it has no name for are left out)."""
    with open(status_path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep and key.strip() == "CapEff":
                bits = int(value.strip(), 16)
                return [name for i, name in enumerate(KNOWN_CAPS) if bits >> i & 1]
    return []


def with_capabilities(caps: list[str]) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        c = _process(s).setdefault("capabilities", {})
        c["bounding"], c["effective"], c["permitted"] = list(caps), list(caps), list(caps)
    return opt


def with_privileged(s: dict, ctx: SpecContext) -> None:
    """containerd's WithPrivileged: every capability this process has, no
    masked or read-only paths, sysfs and cgroupfs writable, no SELinux
    label, AppArmor profile or seccomp filter."""
    with_capabilities(current_capabilities())(s, ctx)
    linux = _linux(s)
    linux.pop("maskedPaths", None)
    linux.pop("readonlyPaths", None)
    for m in s.get("mounts") or []:
        if m.get("type") in ("sysfs", "cgroup"):
            m["options"] = ["rw" if o == "ro" else o for o in m.get("options") or []]
    p = _process(s)
    p.pop("selinuxLabel", None)
    p.pop("apparmorProfile", None)
    linux.pop("seccomp", None)


def with_all_devices_allowed(s: dict, ctx: SpecContext) -> None:
    _resources(s)["devices"] = [{"allow": True, "access": RWM}]


def host_devices(path: str = "/dev") -> list[dict]:
    """containerd's HostDevices: every block and character device under
    /dev (sorted by name, as Go's ReadDir; links, FIFOs, the console and a
    few directories left out), as runtime-spec devices."""
    out: list[dict] = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if name not in SKIPPED_DEV_DIRS:
                out.extend(host_devices(full))
            continue
        if name == "console":
            continue
        kind = "b" if stat.S_ISBLK(st.st_mode) else "c" if stat.S_ISCHR(st.st_mode) else ""
        if not kind:
            continue
        out.append({"path": full, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                    "fileMode": st.st_mode & ~stat.S_IFMT(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


def with_host_devices(s: dict, ctx: SpecContext) -> None:
    linux = _linux(s)
    linux["devices"] = [*(linux.get("devices") or []), *host_devices()]


# -- users and groups, read from the container's root filesystem ------------------------

_MAX_ID = 2**31 - 1


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi, in the range containerd accepts for an id."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    v = int(text)
    return v if 0 <= v <= _MAX_ID else None


def _ensure_additional_gids(s: dict) -> None:
    user = _process(s)["user"]
    gids = user.get("additionalGids") or []
    if user["gid"] not in gids:
        user["additionalGids"] = [user["gid"], *gids]


def _in_rootfs(s: dict, ctx: SpecContext, fn: Callable[[str], Any]) -> Any:
    if ctx.with_rootfs is not None:
        return ctx.with_rootfs(fn)
    root = (s.get("root") or {}).get("path", "")
    if not os.path.isabs(root):
        raise SpecError("rootfs absolute path is required")
    return fn(root)


def with_user_id(uid: int) -> SpecOpt:
    """The user with this uid in the image's /etc/passwd gives the gid (0
    when there is no such user or no passwd file)."""
    def opt(s: dict, ctx: SpecContext) -> None:
        user = _process(s)["user"]
        user.pop("additionalGids", None)

        def look(root: str) -> None:
            found = user_by_uid(root, uid)
            user["uid"], user["gid"] = (found[0], found[1]) if found else (uid, 0)
        try:
            _in_rootfs(s, ctx, look)
        finally:
            _ensure_additional_gids(s)
    return opt


def with_username(name: str) -> SpecOpt:
    def opt(s: dict, ctx: SpecContext) -> None:
        user = _process(s)["user"]
        user.pop("additionalGids", None)

        def look(root: str) -> None:
            found = user_by_name(root, name)
            user["uid"], user["gid"] = found
        try:
            _in_rootfs(s, ctx, look)
        finally:
            _ensure_additional_gids(s)
    return opt


def with_user(userstr: str) -> SpecOpt:
    """containerd's WithUser: `uid`, `name`, `uid:gid`, `name:group`...;
    names are looked up in the container's /etc/passwd and /etc/group."""
    def opt(s: dict, ctx: SpecContext) -> None:
        user = _process(s)["user"]
        user.pop("additionalGids", None)
        parts = userstr.split(":")
        if len(parts) == 1:
            v = _atoi(parts[0])
            (with_username(userstr) if v is None else with_user_id(v))(s, ctx)
            return
        if len(parts) != 2:
            _ensure_additional_gids(s)
            raise SpecError(f"invalid USER value {userstr}")
        try:
            uid_v, gid_v = _atoi(parts[0]), _atoi(parts[1])
            username = parts[0] if uid_v is None else ""
            groupname = parts[1] if gid_v is None else ""
            uid, gid = uid_v or 0, gid_v or 0
            if not username and not groupname:
                user["uid"], user["gid"] = uid, gid
                return

            def look(root: str) -> None:
                nonlocal uid, gid
                if username:
                    uid = user_by_name(root, username)[0]
                if groupname:
                    gid = gid_by_name(root, groupname)
                user["uid"], user["gid"] = uid, gid
            _in_rootfs(s, ctx, look)
        finally:
            _ensure_additional_gids(s)
    return opt


def with_additional_gids(userstr: str) -> SpecOpt:
    """The groups that list this user (by name, or the name of this uid)
    as a member, from the container's /etc/group."""
    def opt(s: dict, ctx: SpecContext) -> None:
        user = _process(s)["user"]
        user.pop("additionalGids", None)

        def look(root: str) -> None:
            try:
                gids = additional_gids(root, userstr)
                if gids is not None:
                    user["additionalGids"] = gids
            finally:
                _ensure_additional_gids(s)
        _in_rootfs(s, ctx, look)
    return opt


def with_image_config(config: dict) -> SpecOpt:
    """containerd's WithImageConfig for a Linux spec, from the image's
    config JSON: env (the spec's own entries win), entrypoint + cmd, the
    working directory, the user and its groups."""
    cfg = config.get("config") or {}

    def opt(s: dict, ctx: SpecContext) -> None:
        p = _process(s)
        if "linux" not in s:
            raise SpecError("spec does not contain Linux or Windows section")
        defaults = cfg.get("Env") or [DEFAULT_PATH_ENV]
        p["env"] = replace_or_append_env(defaults, p.get("env") or [])
        p["args"] = [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
        p["cwd"] = cfg.get("WorkingDir") or "/"
        if cfg.get("User"):
            with_user(cfg["User"])(s, ctx)
            with_additional_gids(str(p["user"]["uid"]))(s, ctx)
        else:
            with_additional_gids("root")(s, ctx)
    return opt


# -- ctr's --mount ------------------------------------------------------------------

def parse_mount_flag(text: str) -> dict:
    """ctr's --mount: CSV fields `key=value` (type, src/source,
    dst/destination, options joined with `:`)."""
    import csv

    mount: dict[str, Any] = {"destination": ""}
    try:
        fields = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration):
        raise SpecError(f"invalid mount specification: {text[:200]!r}") from None
    for f in fields:
        key, sep, val = f.partition("=")
        if not sep:
            raise SpecError("invalid mount specification: expected key=val")
        if key == "type":
            mount["type"] = val
        elif key in ("source", "src"):
            mount["source"] = val
        elif key in ("destination", "dst"):
            mount["destination"] = val
        elif key == "options":
            mount["options"] = val.split(":")
        else:
            raise SpecError(f'mount option "{key[:100]}" not supported')
    return mount


# -- Go's encoding/json -----------------------------------------------------------------

# per struct: (json key, kind, child struct); kinds: "req" always written,
# "omit" left out when Go's zero value, "ptr" left out only when absent
_F = tuple[str, str, str | None]
SCHEMA: dict[str, tuple[_F, ...]] = {
    "Spec": (("ociVersion", "req", None), ("process", "ptr", "Process"), ("root", "ptr", "Root"),
             ("hostname", "omit", None), ("domainname", "omit", None), ("mounts", "omit", "Mount"),
             ("hooks", "ptr", None), ("annotations", "omit", None), ("linux", "ptr", "Linux")),
    "Process": (("terminal", "omit", None), ("consoleSize", "ptr", "Box"), ("user", "req", "User"),
                ("args", "omit", None), ("commandLine", "omit", None), ("env", "omit", None),
                ("cwd", "req", None), ("capabilities", "ptr", "Caps"), ("rlimits", "omit", "Rlimit"),
                ("noNewPrivileges", "omit", None), ("apparmorProfile", "omit", None),
                ("oomScoreAdj", "ptr", None), ("selinuxLabel", "omit", None)),
    "Box": (("height", "req", None), ("width", "req", None)),
    "User": (("uid", "req", None), ("gid", "req", None), ("umask", "ptr", None),
             ("additionalGids", "omit", None), ("username", "omit", None)),
    "Caps": (("bounding", "omit", None), ("effective", "omit", None), ("inheritable", "omit", None),
             ("permitted", "omit", None), ("ambient", "omit", None)),
    "Rlimit": (("type", "req", None), ("hard", "req", None), ("soft", "req", None)),
    "Root": (("path", "req", None), ("readonly", "omit", None)),
    "Mount": (("destination", "req", None), ("type", "omit", None), ("source", "omit", None),
              ("options", "omit", None), ("uidMappings", "omit", None), ("gidMappings", "omit", None)),
    "Linux": (("uidMappings", "omit", None), ("gidMappings", "omit", None), ("sysctl", "omit", None),
              ("resources", "ptr", "Resources"), ("cgroupsPath", "omit", None),
              ("namespaces", "omit", "Namespace"), ("devices", "omit", "Device"), ("seccomp", "ptr", None),
              ("rootfsPropagation", "omit", None), ("maskedPaths", "omit", None),
              ("readonlyPaths", "omit", None), ("mountLabel", "omit", None), ("intelRdt", "ptr", None),
              ("personality", "ptr", None)),
    "Namespace": (("type", "req", None), ("path", "omit", None)),
    "Device": (("path", "req", None), ("type", "req", None), ("major", "req", None), ("minor", "req", None),
               ("fileMode", "ptr", None), ("uid", "ptr", None), ("gid", "ptr", None)),
    "Resources": (("devices", "omit", "DeviceCgroup"), ("memory", "ptr", "Memory"), ("cpu", "ptr", "CPU"),
                  ("pids", "ptr", "Pids"), ("blockIO", "ptr", None), ("hugepageLimits", "omit", None),
                  ("network", "ptr", None), ("rdma", "omit", None), ("unified", "omit", None)),
    "DeviceCgroup": (("allow", "req", None), ("type", "omit", None), ("major", "ptr", None),
                     ("minor", "ptr", None), ("access", "omit", None)),
    "Memory": tuple((k, "ptr", None) for k in ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
                                               "disableOOMKiller", "useHierarchy", "checkBeforeUpdate")),
    "CPU": (("shares", "ptr", None), ("quota", "ptr", None), ("burst", "ptr", None), ("period", "ptr", None),
            ("realtimeRuntime", "ptr", None), ("realtimePeriod", "ptr", None), ("cpus", "omit", None),
            ("mems", "omit", None), ("idle", "ptr", None)),
    "Pids": (("limit", "req", None),),
}


def _is_zero(v: Any) -> bool:
    return v is None or v is False or v == 0 and not isinstance(v, bool) or v in ("", [], {})


def _shape(value: Any, struct: str | None) -> Any:
    """`value` with its keys in Go's struct order and omitempty applied."""
    if struct is None:
        if isinstance(value, dict):
            return {k: value[k] for k in sorted(value)}  # Go writes a map's keys sorted
        return value
    if isinstance(value, list):
        return [_shape(v, struct) for v in value]
    out = {}
    for key, kind, child in SCHEMA[struct]:
        v = value.get(key)
        if kind == "ptr" and v is None or kind == "omit" and _is_zero(v):
            continue
        if v is None:
            v = {} if child else ("" if key in ("cwd", "path", "ociVersion", "type") else 0)
        out[key] = _shape(v, child)
    return out


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]|\\\\.")
_SHORT = {"\\b": "\\u0008", "\\f": "\\u000c"}


def _go_escape(text: str) -> str:
    # Python leaves <, > and & alone and writes \b and \f short; Go (1.19) escapes all of them as \u
    def one(m: re.Match) -> str:
        g = m.group()
        return _SHORT.get(g, g) if g.startswith("\\") else _GO_ESCAPES[g]
    return _GO_ESCAPE_RE.sub(one, text)


def shape(spec: dict) -> dict:
    """The spec as Go would see it after decoding it into specs-go.Spec:
    keys in struct order, empty optional fields gone (unknown keys too)."""
    return _shape(spec, "Spec")


def go_json(value: Any, indent: bool = False) -> str:
    """json.dumps as Go's encoding/json writes (HTML-safe escapes, UTF-8
    kept); dict order as given."""
    text = json.dumps(value, ensure_ascii=False, indent=4 if indent else None,
                      separators=(",", ": ") if indent else (",", ":"))
    return _go_escape(text)


def to_json(spec: dict, indent: bool = False) -> str:
    """Go's json.Marshal (or, with indent, MarshalIndent with four spaces)
    of the spec as specs-go.Spec."""
    return go_json(_shape(spec, "Spec"), indent)


def dumps(spec: dict) -> bytes:
    """The bytes containerd's client stores as the container's spec."""
    return to_json(spec).encode("utf-8", errors="surrogateescape")
