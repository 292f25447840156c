"""`events`: containerd's events as ctr prints them, one a line: the
envelope's time (Go's time string), namespace, topic, and the event as
Go's encoding/json writes containerd's generated event structs (proto
field names, empty fields left out except timestamps, Any as type_url and
base64 value)."""

from __future__ import annotations

import argparse
import base64
import importlib
import sys
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pycontainerd.client.client import Client
from pycontainerd.pkg import timestamps
from pycontainerd.pkg.oci import spec as ocispec

EVENT_MODULES = ("container", "content", "image", "namespace", "snapshot", "task")


def _load_event_types() -> None:
    for name in EVENT_MODULES:
        importlib.import_module(f"pycontainerd.api.events.{name}_pb2")


def _value(field: FieldDescriptor, v: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full = field.message_type.full_name
        if full == "google.protobuf.Timestamp":
            return timestamps.format_rfc3339nano(timestamps.from_pb(v))
        if full == "google.protobuf.Any":
            out = {"type_url": v.type_url}
            if v.value:
                out["value"] = base64.b64encode(v.value).decode()
            return out
        return go_struct(v)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    return v


def go_struct(msg: Message) -> dict:
    """A gogo-generated struct of this message, as json.Marshal writes it."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:  # declaration order, as the Go struct
        v = getattr(msg, field.name)
        is_time = field.type == FieldDescriptor.TYPE_MESSAGE and \
            field.message_type.full_name == "google.protobuf.Timestamp"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if v:
                value_field = field.message_type.fields_by_name["value"]
                out[field.name] = {k: _value(value_field, v[k]) for k in sorted(v)}
        elif field.is_repeated:
            if v:
                out[field.name] = [_value(field, x) for x in v]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if is_time:
                out[field.name] = _value(field, v) if msg.HasField(field.name) else "0001-01-01T00:00:00Z"
            elif msg.HasField(field.name):
                out[field.name] = _value(field, v)
        elif v:
            out[field.name] = _value(field, v)
    return out


def event_json(event: Any) -> str:
    """The event in an Any, as ctr prints it ("" when it has none)."""
    if not event.type_url:
        return ""
    try:
        cls = message_factory.GetMessageClass(
            descriptor_pool.Default().FindMessageTypeByName(event.type_url.rsplit("/", 1)[-1]))
    except KeyError:
        raise ValueError(f"type with url {event.type_url}: not found") from None
    return ocispec.go_json(go_struct(cls.FromString(event.value)))


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    _load_event_types()
    for envelope in client.subscribe(*args.filters):
        try:
            text = event_json(envelope.event)
        except ValueError as exc:
            print(f"pyctr: cannot unmarshal an event from Any: {exc}", file=sys.stderr)
            continue
        ts = timestamps.go_string(timestamps.from_pb(envelope.timestamp))
        print(ts, envelope.namespace, envelope.topic, text, flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("events", aliases=["event"], help="display containerd events")
    p.add_argument("filters", nargs="*", metavar="<filter>")
    p.set_defaults(fn=cmd_events)
