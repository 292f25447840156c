"""`pycontainerd [--address A] publish --topic T --namespace N < event`:
containerd's `publish` command, which the v1 shim (containerd-shim) runs
once for every event it sends (`-containerd-binary` names this program).

What it does is containerd's cmd/containerd/command/publish.go: stdin
holds a serialized google.protobuf.Any (the event), which goes to the
daemon's Events.Publish with the topic in the request and the namespace in
the request metadata, so the daemon stamps the time and validates both as
for any publisher. A missing topic is refused before anything is read.

It runs per event, so it imports grpc and the events stubs only: no
plugin, no config beyond the address it is given.
"""

from __future__ import annotations

import os
import sys

NAMESPACE_HEADER = "containerd-namespace"
CALL_TIMEOUT = 10.0  # a daemon that takes the connection but never answers does not hold the shim for ever
# containerd reads stdin to its end, however long that takes and however much
# comes. The shim writes a small event and closes the pipe at once, so a
# bound on both costs it nothing and keeps a writer that never closes (or
# never stops) from holding this process, and its memory, for ever.
READ_TIMEOUT = 10.0
UNIX_PATH_MAX = 107  # sun_path, less its NUL
MAX_MESSAGE = 1024  # the line printed: an address, a topic or a namespace may be of any length
MAX_EVENT_SIZE = 16 << 20  # the daemon's default gRPC max message: anything larger is refused there anyway


class PublishError(Exception):
    """What the command prints (after `pycontainerd: `) before exiting 1."""


def publish(address: str, topic: str, namespace: str, data: bytes | None = None) -> int:
    """Publish the serialized Any `data` (None: read stdin); 0 on
    success, else 1 with the reason on stderr."""
    try:
        send(address, topic, namespace, data)
    except PublishError as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    return 0


def send(address: str, topic: str, namespace: str, data: bytes | None) -> None:
    from pycontainerd.pkg.errdefs import cut

    if not topic:
        raise PublishError("topic required to publish event: invalid argument")
    if data is None:
        data = read_event(sys.stdin.buffer.fileno())
    from google.protobuf import any_pb2
    from google.protobuf.message import DecodeError

    try:
        event = any_pb2.Any.FromString(data)
    except DecodeError as exc:
        raise PublishError(f"the event on stdin is not a google.protobuf.Any: {cut(str(exc))}") from None

    import grpc

    from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc

    target = address if address.startswith("unix:") else "unix:" + address
    path = target[len("unix:"):].removeprefix("//")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:  # grpc would print its own complaint to stderr first
        raise PublishError(f'failed to dial "{cut(address)}": dial unix {cut(path)}: connect: invalid argument')
    with grpc.insecure_channel(target) as channel:
        stub = events_pb2_grpc.EventsStub(channel)
        try:
            # no wait for readiness: a socket nobody serves fails at once (containerd's
            # FailOnNonTempDialError), and the call's deadline bounds the rest
            stub.Publish(events_pb2.PublishRequest(topic=topic, event=event), timeout=CALL_TIMEOUT,
                         metadata=((NAMESPACE_HEADER, namespace),))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:  # grpc's details repeat the address: both are cut
                raise PublishError(f'failed to dial "{cut(address)}": {cut(exc.details() or "unavailable")}') from None
            raise PublishError(cut(_error_text(exc), MAX_MESSAGE)) from None


def read_event(fd: int, timeout: float = READ_TIMEOUT, limit: int = MAX_EVENT_SIZE) -> bytes:
    """All of `fd` up to its end, within `timeout` seconds and `limit` bytes."""
    import select
    import time

    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise PublishError(f"reading the event from stdin: no end after {timeout:g}s")
        try:
            chunk = os.read(fd, 1 << 20)
        except OSError as exc:
            raise PublishError(f"reading the event from stdin: {exc.strerror or exc}") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PublishError(f"the event on stdin is larger than {limit} bytes")
        chunks.append(chunk)


def _error_text(exc) -> str:
    """The daemon's answer as containerd's errdefs.FromGRPC prints it."""
    from pycontainerd.pkg.errgrpc import from_grpc

    return str(from_grpc(exc.code(), exc.details() or ""))
