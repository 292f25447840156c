"""A client for containerd's gRPC API: talks to pycontainerd or a real
containerd alike. Synchronous, so a CLI or a test can use it directly.

Errors come back as pycontainerd.pkg.errdefs classes, rebuilt from the
gRPC status the way containerd's client does (code -> class, sentinel
stripped from the message).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import grpc
from google.protobuf import empty_pb2, field_mask_pb2

from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.pkg.defaults import DEFAULT_ADDRESS
from pycontainerd.pkg import errgrpc, leases, namespaces

from .dial import DialError, check_socket

NAMESPACE_HEADER = namespaces.GRPC_HEADER
DURATIONS_KEY = "pycontainerd-init-durations"
ADDRESS_ENV = "CONTAINERD_ADDRESS"
NAMESPACE_ENV = "CONTAINERD_NAMESPACE"
DEFAULT_NAMESPACE = "default"
CONNECT_TIMEOUT = 10.0  # seconds, containerd's client default


def default_address() -> str:
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def _errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None

    return wrapper


@dataclass
class PluginInfo:
    """A plugin row as the server reported it, with pycontainerd's init
    duration when the server sends one."""

    type: str
    id: str
    requires: list[str]
    platforms: list[str]
    exports: dict[str, str]
    capabilities: list[str]
    init_err: tuple[int, str] | None
    init_duration: float | None = None

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"

    @property
    def status(self) -> str:
        """ctr's rule: an error whose message says "skip plugin" is a skip."""
        if self.init_err is None:
            return "ok"
        return "skip" if "skip plugin" in self.init_err[1] else "error"


def format_platform(p: Any) -> str:
    """containerd's platforms.Format: os/arch[/variant], "unknown" when empty."""
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


@dataclass
class Client:
    address: str = field(default_factory=default_address)
    namespace: str = field(default_factory=lambda: os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE)
    timeout: float | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    debug: bool = False  # log each call, its namespace and duration to stderr

    def __post_init__(self) -> None:
        check_socket(self.address)  # a missing path or a non-socket fails now, not after the timeout
        target = self.address if "://" in self.address or self.address.startswith("unix:") else "unix:" + self.address
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
        )
        self._wait_until_served()

    def _wait_until_served(self) -> None:
        """Block, as containerd's client dials, until a gRPC server answers
        (any answer will do) or the connect timeout passes. One Version call
        that waits for the connection does it: grpc.channel_ready_future
        would too, but leaves a connectivity poller that holds up close()
        by 200 ms, which every pyctr command paid."""
        try:
            version_pb2_grpc.VersionStub(self.channel).Version(
                empty_pb2.Empty(), timeout=self.connect_timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                return  # a gRPC server answered
            self.channel.close()
            if exc.code() == grpc.StatusCode.UNAVAILABLE:  # connected, then dropped
                raise DialError(self.address, (exc.details() or "unavailable").lower()[:200]) from None
            raise DialError(self.address, f"context deadline exceeded (no gRPC answer within "
                                          f"{self.connect_timeout:g}s: is it a containerd socket? is the daemon stuck?)"
                            ) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((NAMESPACE_HEADER, self.namespace),) if self.namespace else ()

    def leased_metadata(self, lease: str) -> tuple[tuple[str, str], ...]:
        """The request metadata with `lease` (if any): what a request creates
        is then held by that lease."""
        return self._metadata + (((leases.GRPC_HEADER, lease),) if lease else ())

    def _call(self, method: Any, request: Any, with_call: bool = False, lease: str = "") -> Any:
        started = time.monotonic()
        outcome = "ok"
        metadata = self.leased_metadata(lease)
        try:
            if with_call:
                return method.with_call(request, metadata=metadata, timeout=self.timeout)
            return method(request, metadata=metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            outcome = exc.code().name
            raise
        finally:
            if self.debug:
                name = getattr(method, "_method", b"")
                name = name.decode() if isinstance(name, bytes) else str(name)
                ms = (time.monotonic() - started) * 1000
                print(f'level=debug msg="rpc" method={name} namespace={self.namespace} '
                      f'status={outcome} duration={ms:.3f}ms', file=sys.stderr)

    # -- version and introspection --------------------------------------------

    @_errors
    def version(self) -> tuple[str, str]:
        r = self._call(version_pb2_grpc.VersionStub(self.channel).Version, empty_pb2.Empty())
        return r.version, r.revision

    @_errors
    def server(self) -> introspection_pb2.ServerResponse:
        return self._call(introspection_pb2_grpc.IntrospectionStub(self.channel).Server, empty_pb2.Empty())

    @_errors
    def plugins(self, filters: list[str] | tuple[str, ...] = ()) -> list[PluginInfo]:
        stub = introspection_pb2_grpc.IntrospectionStub(self.channel)
        response, call = self._call(stub.Plugins, introspection_pb2.PluginsRequest(filters=list(filters)), with_call=True)
        durations: dict[str, float] = {}
        for key, value in call.trailing_metadata() or ():
            if key == DURATIONS_KEY:
                durations = json.loads(value)
        out = []
        for p in response.plugins:
            uri = f"{p.type}.{p.id}"
            out.append(
                PluginInfo(
                    type=p.type,
                    id=p.id,
                    requires=list(p.requires),
                    platforms=[format_platform(x) for x in p.platforms],
                    exports=dict(p.exports),
                    capabilities=list(p.capabilities),
                    init_err=(p.init_err.code, p.init_err.message) if p.HasField("init_err") else None,
                    init_duration=durations.get(uri),
                )
            )
        return out

    # -- namespaces -------------------------------------------------------------

    @property
    def _ns(self) -> namespace_pb2_grpc.NamespacesStub:
        return namespace_pb2_grpc.NamespacesStub(self.channel)

    @_errors
    def namespace_create(self, name: str, labels: dict[str, str] | None = None) -> None:
        ns = namespace_pb2.Namespace(name=name, labels=labels or {})
        self._call(self._ns.Create, namespace_pb2.CreateNamespaceRequest(namespace=ns))

    @_errors
    def namespace_labels(self, name: str) -> dict[str, str]:
        r = self._call(self._ns.Get, namespace_pb2.GetNamespaceRequest(name=name))
        return dict(r.namespace.labels)

    @_errors
    def namespace_list(self) -> list[str]:
        r = self._call(self._ns.List, namespace_pb2.ListNamespacesRequest())
        return [n.name for n in r.namespaces]

    @_errors
    def namespace_set_label(self, name: str, key: str, value: str) -> None:
        """containerd's SetLabel: an update masked to `labels.<key>`."""
        request = namespace_pb2.UpdateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels={key: value} if value else {}),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{key}"]),
        )
        self._call(self._ns.Update, request)

    @_errors
    def namespace_delete(self, name: str) -> None:
        self._call(self._ns.Delete, namespace_pb2.DeleteNamespaceRequest(name=name))

    # -- events -------------------------------------------------------------------

    def subscribe(self, *filters: str) -> Iterator[events_pb2.Envelope]:
        stream = events_pb2_grpc.EventsStub(self.channel).Subscribe(
            events_pb2.SubscribeRequest(filters=list(filters)), metadata=self._metadata
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise errgrpc.from_grpc(exc.code(), exc.details()) from None
        finally:
            stream.cancel()
