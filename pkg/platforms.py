"""Platforms as containerd names them (its platforms package)."""

from __future__ import annotations


def default_string() -> str:
    """platforms.DefaultString(): linux/<GOARCH> of this machine."""
    import platform

    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return f"linux/{arch}"
