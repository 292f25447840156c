"""Runtime v1's two option messages, read from the `google.protobuf.Any`
they travel in: a container's runtime options (containerd.linux.runc
.RuncOptions: the OCI runtime binary, runc's root, criu, the systemd cgroup
driver) and a task's create options (containerd.linux.runc.CreateOptions,
of which the runtime reads the shim's cgroup; the shim reads the rest).
Options of another type are refused with containerd's plain error."""

from __future__ import annotations

from typing import Any

from pycontainerd.pkg import errdefs

RUNC_OPTIONS = "containerd.linux.runc.RuncOptions"
CREATE_OPTIONS = "containerd.linux.runc.CreateOptions"


class OptionsError(errdefs.Unknown):
    sentinel = ""


def _pb():
    from pycontainerd.api.runtime.linux.runctypes import runc_pb2

    return runc_pb2


def _unpack(value: Any | None, name: str, cls: Any, wording: str) -> Any:
    from google.protobuf.message import DecodeError

    out = cls()
    if value is None:
        return out
    if value.type_url.rsplit("/", 1)[-1] != name:
        raise OptionsError(wording)
    try:
        out.ParseFromString(value.value)
    except DecodeError:
        raise OptionsError(wording) from None
    return out


def runc_options(value: Any | None) -> Any:
    """A container's RuncOptions (empty when it has none)."""
    return _unpack(value, RUNC_OPTIONS, _pb().RuncOptions, "invalid runtime options format")


def create_options(value: Any | None) -> Any:
    """A task's CreateOptions (empty when it has none)."""
    return _unpack(value, CREATE_OPTIONS, _pb().CreateOptions, "invalid task create options format")
