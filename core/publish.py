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

import sys

NAMESPACE_HEADER = "containerd-namespace"
CALL_TIMEOUT = 10.0  # a daemon that takes the connection but never answers does not hold the shim for ever


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
    if not topic:
        raise PublishError("topic required to publish event: invalid argument")
    if data is None:
        data = sys.stdin.buffer.read()
    from google.protobuf import any_pb2
    from google.protobuf.message import DecodeError

    try:
        event = any_pb2.Any.FromString(data)
    except DecodeError as exc:
        raise PublishError(f"the event on stdin is not a google.protobuf.Any: {exc}") from None

    import grpc

    from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc

    target = address if address.startswith("unix:") else "unix:" + address
    with grpc.insecure_channel(target) as channel:
        stub = events_pb2_grpc.EventsStub(channel)
        try:
            # no wait for readiness: a socket nobody serves fails at once (containerd's
            # FailOnNonTempDialError), and the call's deadline bounds the rest
            stub.Publish(events_pb2.PublishRequest(topic=topic, event=event), timeout=CALL_TIMEOUT,
                         metadata=((NAMESPACE_HEADER, namespace),))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise PublishError(f'failed to dial "{address}": {exc.details() or "unavailable"}') from None
            raise PublishError(_error_text(exc)) from None


def _error_text(exc) -> str:
    """The daemon's answer as containerd's errdefs.FromGRPC prints it."""
    from pycontainerd.pkg.errgrpc import from_grpc

    return str(from_grpc(exc.code(), exc.details() or ""))
