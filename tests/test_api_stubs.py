"""The committed gRPC stubs are fresh, and the wire facts ctr relies on hold.

The expected names and field numbers below are containerd 1.6's API, written
out by hand so this test needs nothing but the stubs (no containerd sources).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pycontainerd.api import generate
from pycontainerd.api.services.events.v1 import events_pb2
from pycontainerd.api.services.introspection.v1 import introspection_pb2
from pycontainerd.api.services.namespaces.v1 import namespace_pb2
from pycontainerd.api.services.version.v1 import version_pb2

API_DIR = Path(generate.__file__).resolve().parent

# --- freshness -----------------------------------------------------------


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    proc = subprocess.run(
        [sys.executable, "-m", "pycontainerd.api.generate", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"generator failed:\n{proc.stdout}{proc.stderr}"

    fresh = set(generate.generated_files(out))
    committed = set(generate.generated_files(API_DIR))
    assert fresh, "generator produced nothing"

    missing = sorted(map(str, fresh - committed))
    extra = sorted(map(str, committed - fresh))
    stale = sorted(
        str(rel) for rel in fresh & committed if (out / rel).read_bytes() != (API_DIR / rel).read_bytes()
    )
    assert not (missing or extra or stale), (
        "generated stubs under api/ are out of date; run `make proto`\n"
        f"  missing: {missing}\n  extra:   {extra}\n  stale:   {stale}"
    )


def test_every_proto_has_stubs() -> None:
    committed = set(generate.generated_files(API_DIR))
    for proto in generate.proto_files(API_DIR):
        stem = proto.with_suffix("")
        for suffix in generate.GENERATED_SUFFIXES:
            assert stem.with_name(stem.name + suffix) in committed, f"no stub for {proto}; run `make proto`"


# --- wire facts ------------------------------------------------------------

# service full name -> {method: (input full name, output full name, server streaming)}
SERVICES = {
    (introspection_pb2, "Introspection"): (
        "containerd.services.introspection.v1.Introspection",
        {
            "Plugins": (
                "containerd.services.introspection.v1.PluginsRequest",
                "containerd.services.introspection.v1.PluginsResponse",
                False,
            ),
            "Server": ("google.protobuf.Empty", "containerd.services.introspection.v1.ServerResponse", False),
        },
    ),
    (version_pb2, "Version"): (
        "containerd.services.version.v1.Version",
        {"Version": ("google.protobuf.Empty", "containerd.services.version.v1.VersionResponse", False)},
    ),
    (namespace_pb2, "Namespaces"): (
        "containerd.services.namespaces.v1.Namespaces",
        {
            "Get": (
                "containerd.services.namespaces.v1.GetNamespaceRequest",
                "containerd.services.namespaces.v1.GetNamespaceResponse",
                False,
            ),
            "List": (
                "containerd.services.namespaces.v1.ListNamespacesRequest",
                "containerd.services.namespaces.v1.ListNamespacesResponse",
                False,
            ),
            "Create": (
                "containerd.services.namespaces.v1.CreateNamespaceRequest",
                "containerd.services.namespaces.v1.CreateNamespaceResponse",
                False,
            ),
            "Update": (
                "containerd.services.namespaces.v1.UpdateNamespaceRequest",
                "containerd.services.namespaces.v1.UpdateNamespaceResponse",
                False,
            ),
            "Delete": ("containerd.services.namespaces.v1.DeleteNamespaceRequest", "google.protobuf.Empty", False),
        },
    ),
    (events_pb2, "Events"): (
        "containerd.services.events.v1.Events",
        {
            "Publish": ("containerd.services.events.v1.PublishRequest", "google.protobuf.Empty", False),
            "Forward": ("containerd.services.events.v1.ForwardRequest", "google.protobuf.Empty", False),
            "Subscribe": ("containerd.services.events.v1.SubscribeRequest", "containerd.services.events.v1.Envelope", True),
        },
    ),
}


@pytest.mark.parametrize("key", list(SERVICES), ids=[name for _, name in SERVICES])
def test_service_methods(key) -> None:
    module, name = key
    full_name, methods = SERVICES[key]
    service = module.DESCRIPTOR.services_by_name[name]
    assert service.full_name == full_name
    got = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming) for m in service.methods
    }
    assert got == methods
    assert not any(m.client_streaming for m in service.methods)


# message -> {field name: field number}
FIELDS = [
    (
        introspection_pb2.Plugin,
        {"type": 1, "id": 2, "requires": 3, "platforms": 4, "exports": 5, "capabilities": 6, "init_err": 7},
    ),
    # pid/pidns are containerd 1.7 additions; 1.6 clients ignore them.
    (introspection_pb2.ServerResponse, {"uuid": 1, "pid": 2, "pidns": 3}),
    (version_pb2.VersionResponse, {"version": 1, "revision": 2}),
    (namespace_pb2.Namespace, {"name": 1, "labels": 2}),
    (namespace_pb2.UpdateNamespaceRequest, {"namespace": 1, "update_mask": 2}),
    (events_pb2.Envelope, {"timestamp": 1, "namespace": 2, "topic": 3, "event": 4}),
    (events_pb2.PublishRequest, {"topic": 1, "event": 2}),
]


@pytest.mark.parametrize("message, fields", FIELDS, ids=[m.DESCRIPTOR.full_name for m, _ in FIELDS])
def test_field_numbers(message, fields) -> None:
    assert {f.name: f.number for f in message.DESCRIPTOR.fields} == fields


def test_field_types() -> None:
    plugin = introspection_pb2.Plugin.DESCRIPTOR.fields_by_name
    assert plugin["platforms"].message_type.full_name == "containerd.types.Platform"
    assert plugin["init_err"].message_type.full_name == "google.rpc.Status"
    assert plugin["exports"].message_type.GetOptions().map_entry
    server = introspection_pb2.ServerResponse.DESCRIPTOR.fields_by_name
    assert server["pid"].type == server["pidns"].type == server["pid"].TYPE_UINT64
    envelope = events_pb2.Envelope.DESCRIPTOR.fields_by_name
    assert envelope["timestamp"].message_type.full_name == "google.protobuf.Timestamp"
    assert envelope["event"].message_type.full_name == "google.protobuf.Any"
    mask = namespace_pb2.UpdateNamespaceRequest.DESCRIPTOR.fields_by_name["update_mask"]
    assert mask.message_type.full_name == "google.protobuf.FieldMask"
