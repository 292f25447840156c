"""Times as containerd handles them: integer nanoseconds since the epoch
inside, google.protobuf.Timestamp on the wire, Go's RFC 3339 text on disk
(content ingests' `startedat`/`updatedat`, gc.expire labels) and Go's
time.Time.String() in a few error messages."""

from __future__ import annotations

import datetime
import re

from google.protobuf import timestamp_pb2

NS_PER_SECOND = 1_000_000_000

_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def to_pb(ns: int) -> timestamp_pb2.Timestamp:
    """A Timestamp message for nanoseconds since the epoch."""
    return timestamp_pb2.Timestamp(seconds=ns // NS_PER_SECOND, nanos=ns % NS_PER_SECOND)


def from_pb(ts: timestamp_pb2.Timestamp) -> int:
    """Nanoseconds since the epoch of a Timestamp message (or anything with
    `seconds` and `nanos`)."""
    return ts.seconds * NS_PER_SECOND + ts.nanos


def _utc_seconds(ns: int, fmt: str) -> str:
    secs, frac = divmod(ns, NS_PER_SECOND)
    text = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime(fmt)
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text


def format_rfc3339nano(ns: int) -> str:
    """Go's time.MarshalText in UTC: the fraction without trailing zeros."""
    return _utc_seconds(ns, "%Y-%m-%dT%H:%M:%S") + "Z"


def parse_rfc3339nano(text: str) -> int:
    """Nanoseconds since the epoch of RFC 3339 text (any zone offset);
    ValueError when it is not one."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    tz = datetime.timezone.utc
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    dt = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    return int(dt.timestamp()) * NS_PER_SECOND + int((frac or "0").ljust(9, "0"))


def go_string(ns: int) -> str:
    """Go's time.Time.String() in UTC (without the monotonic reading)."""
    return _utc_seconds(ns, "%Y-%m-%d %H:%M:%S") + " +0000 UTC"
