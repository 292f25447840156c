"""The gRPC edge of pkg/errdefs: each error class's status code, both ways
(containerd's errdefs/grpc.go, which containerd 2 moved to `errgrpc`).

The server side turns a raised class into the status containerd would send
(`to_grpc`); clients (pyctr, the proxy plugins) turn a status back into the
class (`from_grpc`), stripping the sentinel the server appended so it is not
printed twice.
"""

from __future__ import annotations

import grpc

from . import errdefs

_CODES: dict[type[errdefs.ContainerdError], grpc.StatusCode] = {
    errdefs.Unknown: grpc.StatusCode.UNKNOWN,
    errdefs.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errdefs.NotFound: grpc.StatusCode.NOT_FOUND,
    errdefs.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errdefs.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errdefs.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errdefs.NotImplementedErr: grpc.StatusCode.UNIMPLEMENTED,
    errdefs.Aborted: grpc.StatusCode.ABORTED,
    errdefs.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errdefs.Canceled: grpc.StatusCode.CANCELLED,
    errdefs.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CLASSES = {code: cls for cls, code in _CODES.items()}
# what grpc-python says when the client's own deadline passes or the call is
# cancelled; grpc-go says the sentinel itself ("context deadline exceeded")
_CLIENT_SIDE = {grpc.StatusCode.DEADLINE_EXCEEDED: ("Deadline Exceeded",), grpc.StatusCode.CANCELLED: ("Cancelled",)}


def code_of(err: BaseException) -> grpc.StatusCode:
    """The status code of an errdefs class (a subclass takes its base's)."""
    for cls in type(err).__mro__:
        code = _CODES.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def to_grpc(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (code, message) pair containerd's ToGRPC would send for `err`."""
    return code_of(err), str(err)


def from_grpc(code: grpc.StatusCode, details: str) -> errdefs.ContainerdError:
    """Rebuild the class from a gRPC status."""
    cls = _CLASSES.get(code, errdefs.Unknown)
    details = details or ""
    if details in _CLIENT_SIDE.get(code, ()):  # grpc's own wording for what the client itself ran out of
        details = ""
    suffix = ": " + cls.sentinel
    if details.endswith(suffix):
        details = details[: -len(suffix)]
    elif details == cls.sentinel:
        details = ""
    return cls(details)
