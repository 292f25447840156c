"""Platforms as containerd names and matches them (its platforms package):
parsing `os[/arch[/variant]]`, normalising (`x86_64` -> `amd64`, `aarch64`
-> `arm64`, arm's default variant `v7`), and the ordered matching a pull
uses to pick one manifest out of an index (amd64 also runs 386, arm64 also
runs arm v8..v5, arm/v7 also runs v6 and v5)."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from functools import lru_cache

from . import errdefs

_SPECIFIER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
SPECIFIER_PATTERN = "^[A-Za-z0-9_-]+$"  # how containerd's message spells the rule

KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
                      "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos"})
KNOWN_ARCH = frozenset({"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
                        "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
                        "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"})

_MACHINE_TO_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                      "armv7l": "arm", "armv6l": "arm", "armv5tel": "arm", "i386": "386", "i686": "386",
                      "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os, architecture and (for arm) variant."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        return format_platform(self)


def _goarch() -> str:
    machine = _platform.machine().lower()
    return _MACHINE_TO_GOARCH.get(machine, machine)


@lru_cache(maxsize=1)
def _cpu_variant() -> str:
    """The arm variant of this CPU (`v7`, `v8`...), empty elsewhere."""
    if _goarch() not in ("arm", "arm64"):
        return ""
    arch_line = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "Cpu architecture":
                    arch_line = value.strip()
                    break
    except OSError:
        return ""
    if arch_line in ("8", "AArch64"):
        return "v8"
    if arch_line in ("5", "6", "7"):
        return "v" + arch_line
    return ""


def default_string() -> str:
    """platforms.DefaultString(): linux/<GOARCH>[/variant] of this machine."""
    return format_platform(default_spec())


def default_spec() -> Platform:
    """The host's platform, as containerd's DefaultSpec."""
    return Platform("linux", _goarch(), _cpu_variant())


def normalize_os(os_name: str) -> str:
    if not os_name:
        return "linux"
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(normalize_os(p.os), arch, variant, p.os_version)


def parse(specifier: str) -> Platform:
    """containerd's platforms.Parse, with its wording (InvalidArgument)."""
    from .errdefs import go_quote

    if "*" in specifier:
        raise errdefs.InvalidArgument(f"{go_quote(specifier)}: wildcards not yet supported")
    parts = specifier.split("/")
    for part in parts:
        if not part or not set(part) <= _SPECIFIER_CHARS:
            raise errdefs.InvalidArgument(
                f"{go_quote(part)} is an invalid component of {go_quote(specifier)}: platform specifier "
                f"component must match {go_quote(SPECIFIER_PATTERN)}")
    if len(parts) == 1:
        os_name = normalize_os(parts[0])
        if os_name in KNOWN_OS:
            variant = _cpu_variant()
            arch = _goarch()
            return Platform(os_name, arch, variant if arch == "arm" and variant != "v7" else "")
        arch, variant = normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise errdefs.InvalidArgument(f"{go_quote(specifier)}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(normalize_os(parts[0]), arch, variant)
    raise errdefs.InvalidArgument(f"{go_quote(specifier)}: cannot parse platform specifier")


def format_platform(p: Platform) -> str:
    """containerd's platforms.Format: `os/arch[/variant]`, `unknown` without os."""
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def _vector(p: Platform) -> list[Platform]:
    """The platforms `p` can run, best first (containerd's platformVector)."""
    out = [p]
    if p.architecture == "amd64":
        version = _variant_number(p.variant)
        if version is not None and version > 1:
            out += [Platform(p.os, "amd64", f"v{v}", p.os_version) for v in range(version - 1, 0, -1)]
        out.append(Platform(p.os, "386", "", p.os_version))
    elif p.architecture == "arm":
        version = _variant_number(p.variant)
        if version is not None and version > 5:
            out += [Platform(p.os, "arm", f"v{v}", p.os_version) for v in range(version - 1, 4, -1)]
    elif p.architecture == "arm64":
        out += _vector(Platform(p.os, "arm", p.variant or "v8", p.os_version))
    return out


def _variant_number(variant: str) -> int | None:
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isdigit() else None


class MatchComparer:
    """Which platforms match, and which of two is preferred: containerd's
    ordered comparer (earlier in its list is better)."""

    def __init__(self, wanted: list[Platform]):
        self.wanted = [normalize(p) for p in wanted]

    def _rank(self, p: Platform) -> int | None:
        n = normalize(p)
        for i, w in enumerate(self.wanted):
            if (w.os, w.architecture, w.variant) == (n.os, n.architecture, n.variant):
                return i
        return None

    def match(self, p: Platform) -> bool:
        return self._rank(p) is not None

    def less(self, a: Platform, b: Platform) -> bool:
        """True when `a` is preferred over `b`."""
        ra, rb = self._rank(a), self._rank(b)
        if ra is None:
            return False
        return rb is None or ra < rb

    def rank(self, p: Platform) -> int | None:
        """The preference of `p` (0 is best), None when it does not match."""
        return self._rank(p)


def only(p: Platform) -> MatchComparer:
    """containerd's platforms.Only: `p` and what it can also run."""
    return MatchComparer(_vector(normalize(p)))


def only_strict(p: Platform) -> MatchComparer:
    return MatchComparer([normalize(p)])


def default() -> MatchComparer:
    """The host's matcher: containerd's platforms.Default()."""
    return only(default_spec())
