"""Go's time.Duration text: what containerd's config (`schedule_delay =
"100ms"`) and ctr's duration flags (`--expires 1h30m`) accept, and how Go
prints a duration back ("0s", "1.5s", "2h0m0s").

Durations are integer nanoseconds here, as in Go.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND, "us": MICROSECOND, "\u00b5s": MICROSECOND, "\u03bcs": MICROSECOND,
    "ms": MILLISECOND, "s": SECOND, "m": MINUTE, "h": HOUR,
}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_MAX = (1 << 63) - 1


class DurationError(ValueError):
    pass


def parse(text: str) -> int:
    """time.ParseDuration: `[-+]?(\\d*(\\.\\d*)?unit)+`, or "0"; nanoseconds."""
    quoted = '"' + text + '"'
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0
    while s:
        m = _PART.match(s)
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise DurationError(f"time: invalid duration {quoted}")
        if not unit:
            raise DurationError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration {quoted}')
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > _MAX:
            raise DurationError(f"time: invalid duration {quoted}")
        s = s[m.end():]
    return -total if neg else total


def format(ns: int) -> str:  # noqa: A001 - Go's name
    """time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        unit, scale = ("\u00b5s", MICROSECOND) if u < MILLISECOND else ("ms", MILLISECOND)
        return sign + _fraction(u, scale) + unit
    h, rest = divmod(u, HOUR)
    m, rest = divmod(rest, MINUTE)
    out = _fraction(rest, SECOND) + "s"
    if h or m:
        out = f"{m}m" + out
    if h:
        out = f"{h}h" + out
    return sign + out


def _fraction(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
