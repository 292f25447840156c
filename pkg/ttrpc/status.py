"""ttrpc's error edge: google.rpc.Status <-> pkg.errdefs classes.

The codes are gRPC's, so the table is pkg/errgrpc's (one table for both
transports); this module only converts between grpc.StatusCode and the
integer a Status carries.
"""

from __future__ import annotations

import grpc
import structlog

from pycontainerd.pkg import errdefs, errgrpc

from .messages import Status

log = structlog.get_logger(__name__)

MAX_STATUS_MESSAGE = 4096  # what a handler's error may say over the wire

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class Closed(errdefs.Unavailable):
    """The connection is gone (ttrpc's ErrClosed): the peer closed it, it
    broke, or the client was closed."""

    sentinel = "ttrpc: closed"


class StatusError(errdefs.ContainerdError):
    """A status whose code has no errdefs class (RESOURCE_EXHAUSTED, ...):
    the code is kept, the message is the peer's."""

    sentinel = ""

    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)


def bounded(message: str) -> str:
    """`message` within MAX_STATUS_MESSAGE bytes, the cut marker included
    (errdefs.cut counts characters and adds its marker past the limit)."""
    data = message.encode()
    if len(data) <= MAX_STATUS_MESSAGE:
        return message
    keep = data[: MAX_STATUS_MESSAGE - 64].decode(errors="ignore")
    return f"{keep}...({len(message) - len(keep)} more characters)"


def to_status(err: BaseException) -> Status:
    """The Status a handler's exception is answered with: errdefs classes
    keep their code and text; anything else is logged and answered as
    UNKNOWN without Python's internals."""
    if isinstance(err, StatusError):
        return Status(code=err.code, message=bounded(str(err)))
    if isinstance(err, errdefs.ContainerdError):
        code, message = errgrpc.to_grpc(err)
        return Status(code=code.value[0], message=bounded(message))
    log.error("ttrpc handler failed", error_type=type(err).__name__, error=errdefs.cut(str(err)))
    return Status(code=grpc.StatusCode.UNKNOWN.value[0], message="internal error")


def from_status(status: Status) -> errdefs.ContainerdError:
    """The errdefs class a non-OK status stands for; a code with no class
    (RESOURCE_EXHAUSTED, ...) stays a StatusError carrying the code."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    err = errgrpc.from_grpc(code, status.message)
    if type(err) is errdefs.Unknown and code is not grpc.StatusCode.UNKNOWN:
        return StatusError(status.code, status.message)
    return err
