"""Go regular expressions, matched in linear time by RE2.

containerd's `~=` filter operator compiles its value with Go's regexp
package, whose syntax is RE2's and whose matching time is linear in the
input. Python's `re` backtracks: `^(a+)+$` against 27 characters held the
daemon (every namespace, Version included) for seconds. So patterns are
compiled by RE2 itself (the `google-re2` binding), which already speaks
Go's syntax: ASCII \\d \\w \\s \\b, `$` at the end of the text only,
mid-pattern (?flags), [[:classes:]], \\Q...\\E, \\pL and scripts, and it
refuses lookaround, backreferences and nested repeats as Go does.

What is left here is the little RE2 (C++) accepts and Go (the 1.19
toolchain containerd 1.6 is built with) refuses, so such a pattern
matches nothing under pycontainerd as under containerd:

* `\\C` (any byte): Go leaves it out;
* `(?<name>...)`: Go accepts only `(?P<name>...)` before 1.22;
* the same group name twice.

The RE2 binding is imported here, and this module is imported only when
a `~=` selector first matches, so start-up does not pay for it.
"""

from __future__ import annotations

from typing import Protocol

import re2

# the compiled program's size cap; a pattern over it does not compile
# (Go has its own limits on repeat nesting; neither lets a pattern eat memory)
MAX_PROGRAM_MEMORY = 8 << 20


class Pattern(Protocol):
    def search(self, text: str):  # pragma: no cover - a protocol
        ...


def compile(pattern: str) -> Pattern:  # noqa: A001 - the module's one entry point
    """Compile Go regexp `pattern`; ValueError when Go would refuse it."""
    _refuse_go_only_differences(pattern)
    options = re2.Options()
    options.log_errors = False  # a user's bad pattern is not worth a stderr line
    options.max_mem = MAX_PROGRAM_MEMORY
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"error parsing regexp: {reason}") from None
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, which Go refuses too
        raise ValueError("error parsing regexp: invalid UTF-8") from None


def _refuse_go_only_differences(p: str) -> None:
    """Raise ValueError for what RE2 accepts but Go does not (see the
    module's docstring). Walks the pattern once, skipping escapes, \\Q...\\E
    literals and character classes, where these constructs mean nothing."""
    names: set[str] = set()
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            e = p[i + 1] if i + 1 < n else ""
            if e == "C":
                raise ValueError("error parsing regexp: invalid escape sequence: `\\C`")
            if e == "Q":
                end = p.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            i += 2
        elif c == "[":
            i = _skip_class(p, i)
        elif p.startswith("(?<", i) and not p.startswith(("(?<=", "(?<!"), i):
            raise ValueError("error parsing regexp: invalid or unsupported Perl syntax: `(?<`")
        elif p.startswith("(?P<", i):
            close = p.find(">", i)
            name = p[i + 4 : close] if close > 0 else ""
            if name in names:
                raise ValueError(f"error parsing regexp: duplicate capture group name: `{name[:64]}`")
            names.add(name)
            i += 4
        else:
            i += 1


def _skip_class(p: str, i: int) -> int:
    """The index past the class that starts at p[i] == '[' (or the end of
    the pattern when it is not closed: RE2 then refuses it)."""
    n = len(p)
    j = i + 1
    if j < n and p[j] == "^":
        j += 1
    if j < n and p[j] == "]":  # a leading ']' is a literal
        j += 1
    while j < n:
        if p[j] == "\\":
            j += 2
        elif p.startswith("[:", j) and p.find(":]", j + 2) > 0:
            j = p.find(":]", j + 2) + 2
        elif p[j] == "]":
            return j + 1
        else:
            j += 1
    return n
