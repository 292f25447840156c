"""containerd's error classes and their gRPC codes.

containerd wraps a sentinel error ("not found", "already exists", ...) under
a context message and maps the sentinel to a gRPC code at the API edge. The
message crosses the wire as `<context>: <sentinel>`, which is what the real
`ctr` prints and what its client strips to rebuild the class. We keep both
the wording and the mapping so errors read the same from either side.
"""

from __future__ import annotations

import grpc


class ContainerdError(Exception):
    """Base class: `message` is the context, `sentinel` the class wording."""

    sentinel = "unknown"
    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str = ""):
        self.message = message
        super().__init__(f"{message}: {self.sentinel}" if message else self.sentinel)


class Unknown(ContainerdError):
    sentinel, code = "unknown", grpc.StatusCode.UNKNOWN


class InvalidArgument(ContainerdError):
    sentinel, code = "invalid argument", grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ContainerdError):
    sentinel, code = "not found", grpc.StatusCode.NOT_FOUND


class AlreadyExists(ContainerdError):
    sentinel, code = "already exists", grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ContainerdError):
    sentinel, code = "failed precondition", grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ContainerdError):
    sentinel, code = "unavailable", grpc.StatusCode.UNAVAILABLE


class NotImplementedErr(ContainerdError):
    sentinel, code = "not implemented", grpc.StatusCode.UNIMPLEMENTED


class Aborted(ContainerdError):
    sentinel, code = "aborted", grpc.StatusCode.ABORTED


class PermissionDenied(ContainerdError):
    sentinel, code = "permission denied", grpc.StatusCode.PERMISSION_DENIED


class Canceled(ContainerdError):
    sentinel, code = "context canceled", grpc.StatusCode.CANCELLED


class DeadlineExceeded(ContainerdError):
    sentinel, code = "context deadline exceeded", grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unavailable,
        NotImplementedErr, Aborted, PermissionDenied, Canceled, DeadlineExceeded,
    )
}


def to_grpc(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (code, message) pair containerd's ToGRPC would send for `err`."""
    if isinstance(err, ContainerdError):
        return err.code, str(err)
    return grpc.StatusCode.UNKNOWN, str(err)


def from_grpc(code: grpc.StatusCode, details: str) -> ContainerdError:
    """Rebuild the class from a gRPC status, stripping the sentinel suffix
    the server appended so it is not printed twice."""
    cls = _BY_CODE.get(code, Unknown)
    details = details or ""
    suffix = ": " + cls.sentinel
    if details.endswith(suffix):
        details = details[: -len(suffix)]
    elif details == cls.sentinel:
        details = ""
    return cls(details)
