"""Every .proto under api/ has containerd 1.6's wire schema.

containerd's generated Go code (.pb.go) carries each file's descriptor as a
gzipped FileDescriptorProto in a `var fileDescriptor_<hash> = []byte{...}`
literal. This test reads that literal from the Go sources Debian ships
(golang-github-containerd-containerd-dev, golang-github-containerd-cgroups-dev),
and compares it with the descriptor of our generated module: packages,
messages (nested ones and map entries too), fields (name, number, label, type,
type name, oneof), enums and their values, services and their methods.
Options (gogoproto and the like) only shape Go code, so they are not compared;
neither are file names and imports, which differ by where the files live.

The Go sources are a hard requirement (`make install` installs them): a
missing one fails the test, so a broken CI image cannot pass by skipping.
"""

from __future__ import annotations

import gzip
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from pycontainerd.api import generate

GO_SRC = Path("/usr/share/gocode/src/github.com/containerd")
CONTAINERD = "containerd"
CGROUPS = "cgroups"

# Our file (relative to api/) -> the Go file (relative to GO_SRC) it mirrors.
# Where our path differs from containerd's layout, the mapping says how.
GO_FILES: dict[str, str] = {
    "types/descriptor.proto": f"{CONTAINERD}/api/types/descriptor.pb.go",
    "types/mount.proto": f"{CONTAINERD}/api/types/mount.pb.go",
    "types/platform.proto": f"{CONTAINERD}/api/types/platform.pb.go",
    "types/metrics.proto": f"{CONTAINERD}/api/types/metrics.pb.go",
    "types/task/task.proto": f"{CONTAINERD}/api/types/task/task.pb.go",
    "events/container.proto": f"{CONTAINERD}/api/events/container.pb.go",
    "events/content.proto": f"{CONTAINERD}/api/events/content.pb.go",
    "events/image.proto": f"{CONTAINERD}/api/events/image.pb.go",
    "events/namespace.proto": f"{CONTAINERD}/api/events/namespace.pb.go",
    "events/snapshot.proto": f"{CONTAINERD}/api/events/snapshot.pb.go",
    "events/task.proto": f"{CONTAINERD}/api/events/task.pb.go",
    "services/containers/v1/containers.proto": f"{CONTAINERD}/api/services/containers/v1/containers.pb.go",
    "services/content/v1/content.proto": f"{CONTAINERD}/api/services/content/v1/content.pb.go",
    "services/diff/v1/diff.proto": f"{CONTAINERD}/api/services/diff/v1/diff.pb.go",
    "services/events/v1/events.proto": f"{CONTAINERD}/api/services/events/v1/events.pb.go",
    "services/images/v1/images.proto": f"{CONTAINERD}/api/services/images/v1/images.pb.go",
    "services/introspection/v1/introspection.proto": (
        f"{CONTAINERD}/api/services/introspection/v1/introspection.pb.go"
    ),
    "services/leases/v1/leases.proto": f"{CONTAINERD}/api/services/leases/v1/leases.pb.go",
    "services/namespaces/v1/namespace.proto": f"{CONTAINERD}/api/services/namespaces/v1/namespace.pb.go",
    "services/snapshots/v1/snapshots.proto": f"{CONTAINERD}/api/services/snapshots/v1/snapshots.pb.go",
    "services/tasks/v1/tasks.proto": f"{CONTAINERD}/api/services/tasks/v1/tasks.pb.go",
    "services/ttrpc/events/v1/events.proto": f"{CONTAINERD}/api/services/ttrpc/events/v1/events.pb.go",
    "services/version/v1/version.proto": f"{CONTAINERD}/api/services/version/v1/version.pb.go",
    # containerd 1.6 keeps the shim API and runc's options under runtime/v2/.
    "runtime/task/v2/shim.proto": f"{CONTAINERD}/runtime/v2/task/shim.pb.go",
    "runtime/runc/options/oci.proto": f"{CONTAINERD}/runtime/v2/runc/options/oci.pb.go",
    # runtime v1: its shim's API and its options, where containerd 1.6 keeps them.
    "runtime/v1/shim/v1/shim.proto": f"{CONTAINERD}/runtime/v1/shim/v1/shim.pb.go",
    "runtime/linux/runctypes/runc.proto": f"{CONTAINERD}/runtime/linux/runctypes/runc.pb.go",
    # github.com/containerd/cgroups, placed under api/cgroups/ with its own layout.
    "cgroups/stats/v1/metrics.proto": f"{CGROUPS}/stats/v1/metrics.pb.go",
    "cgroups/v2/stats/metrics.proto": f"{CGROUPS}/v2/stats/metrics.pb.go",
}

# Deliberate departures from 1.6, each one an addition that 1.6 peers skip as
# an unknown field. Listed exactly, so any other difference still fails and a
# departure that goes away must be struck from here.
KNOWN_ADDITIONS: dict[str, set[str]] = {
    # Introspection.Server answers with containerd 1.7's pid and pidns as well
    # (plugins/services/introspection.py fills them; tests/test_daemon.py checks them).
    "services/introspection/v1/introspection.proto": {
        "messages.ServerResponse.fields.pid: only in ours",
        "messages.ServerResponse.fields.pidns: only in ours",
    },
}

_DESCRIPTOR_LITERAL = re.compile(r"var fileDescriptor_[0-9a-f]+ = \[\]byte\{(.*?)\n\}", re.DOTALL)
_BYTE = re.compile(r"0x([0-9a-fA-F]{2})")
_LINE_COMMENT = re.compile(r"//[^\n]*")


def go_descriptor(go_file: Path) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto embedded in a gogo-generated .pb.go file."""
    source = go_file.read_text()
    found = _DESCRIPTOR_LITERAL.findall(source)
    assert len(found) == 1, f"{go_file}: expected one fileDescriptor_ byte literal, found {len(found)}"
    body = _LINE_COMMENT.sub("", found[0])  # "// 545 bytes of a gzipped FileDescriptorProto"
    data = bytes(int(b, 16) for b in _BYTE.findall(body))
    return descriptor_pb2.FileDescriptorProto.FromString(gzip.decompress(data))


def our_descriptor(proto: str) -> descriptor_pb2.FileDescriptorProto:
    module_name = "pycontainerd.api." + proto.removesuffix(".proto").replace("/", ".") + "_pb2"
    module = importlib.import_module(module_name)
    return descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)


def _field_schema(field: descriptor_pb2.FieldDescriptorProto) -> dict:
    return {
        "name": field.name,
        "number": field.number,
        "label": descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
        "type_name": field.type_name,
        "oneof_index": field.oneof_index if field.HasField("oneof_index") else None,
        "proto3_optional": field.proto3_optional,
    }


def _enum_schema(enum: descriptor_pb2.EnumDescriptorProto) -> dict:
    return {value.name: value.number for value in enum.value}


def _message_schema(message: descriptor_pb2.DescriptorProto) -> dict:
    return {
        "fields": {field.name: _field_schema(field) for field in message.field},
        "oneofs": [oneof.name for oneof in message.oneof_decl],
        "map_entry": message.options.map_entry,
        "nested": {nested.name: _message_schema(nested) for nested in message.nested_type},
        "enums": {enum.name: _enum_schema(enum) for enum in message.enum_type},
        "reserved_ranges": sorted((r.start, r.end) for r in message.reserved_range),
    }


def wire_schema(file: descriptor_pb2.FileDescriptorProto) -> dict:
    """What a peer on the wire depends on, as plain data (pytest diffs it readably)."""
    return {
        "syntax": file.syntax or "proto2",
        "package": file.package,
        "messages": {message.name: _message_schema(message) for message in file.message_type},
        "enums": {enum.name: _enum_schema(enum) for enum in file.enum_type},
        "services": {
            service.name: {
                method.name: {
                    "input_type": method.input_type,
                    "output_type": method.output_type,
                    "client_streaming": method.client_streaming,
                    "server_streaming": method.server_streaming,
                }
                for method in service.method
            }
            for service in file.service
        },
    }


def schema_differences(ours: object, theirs: object, where: str = "") -> Iterator[str]:
    """Each place where two wire schemas disagree, as 'path: ours != theirs'."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(ours.keys() | theirs.keys()):
            here = f"{where}.{key}" if where else str(key)
            if key not in theirs:
                yield f"{here}: only in ours"
            elif key not in ours:
                yield f"{here}: missing from ours"
            else:
                yield from schema_differences(ours[key], theirs[key], here)
    elif ours != theirs:
        yield f"{where}: {ours!r} != {theirs!r}"


def test_every_proto_has_a_go_counterpart() -> None:
    ours = {str(p) for p in generate.proto_files()}
    assert ours == set(GO_FILES), (
        "api/ and the conformance table disagree: "
        f"protos not checked {sorted(ours - set(GO_FILES))}, "
        f"table entries without a proto {sorted(set(GO_FILES) - ours)}"
    )


@pytest.mark.parametrize("proto", sorted(GO_FILES))
def test_proto_matches_containerd(proto: str) -> None:
    go_file = GO_SRC / GO_FILES[proto]
    assert go_file.is_file(), (
        f"{go_file} is missing: install the Debian packages listed in the Makefile "
        "(golang-github-containerd-containerd-dev, golang-github-containerd-cgroups-dev)"
    )
    differences = set(schema_differences(wire_schema(our_descriptor(proto)), wire_schema(go_descriptor(go_file))))
    known = KNOWN_ADDITIONS.get(proto, set())
    unexpected = sorted(differences - known)
    assert not unexpected, f"api/{proto} differs from {go_file} (ours != containerd's):\n" + "\n".join(unexpected)
    assert differences >= known, f"KNOWN_ADDITIONS lists what api/{proto} no longer adds: {sorted(known - differences)}"
