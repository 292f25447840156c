"""Go regular expressions (RE2 syntax) run on Python's re.

containerd's `~=` filter operator compiles its value with Go's regexp
package. Python's re differs in ways a user would notice: \\d, \\w and \\b
are Unicode-aware, `$` also matches before a final newline, (?flags) may
appear mid-pattern in Go, POSIX [[:classes:]] and \\Q...\\E exist only in
Go, and Go refuses lookaround and backreferences. `compile` rewrites a Go
pattern into an equivalent Python one (or raises ValueError for what Go
would refuse), so a filter selects the same objects under pycontainerd as
under containerd.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from typing import Callable, Iterable


# ASCII classes as (first, last) code point ranges
_PERL = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= 0x10FFFF:
        out.append((nxt, 0x10FFFF))
    return out


@functools.lru_cache(maxsize=None)
def _category_ranges(name: str) -> tuple[tuple[int, int], ...]:
    """Code point ranges of a Unicode general category ("L", "Lu", ...), or
    of "Any". Unassigned code points (Cn) are in no category, as in Go."""
    if name == "Any":
        return ((0, 0x10FFFF),)
    if not (len(name) in (1, 2) and name[0] in "CLMNPSZ"):
        raise _Unsupported(f"unknown Unicode class {name}")  # e.g. scripts
    out: list[tuple[int, int]] = []
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        if cat != "Cn" and cat.startswith(name):
            if out and out[-1][1] == cp - 1:
                out[-1] = (out[-1][0], cp)
            else:
                out.append((cp, cp))
    if not out:
        raise _Unsupported(f"unknown Unicode class {name}")
    return tuple(out)


def _normalize(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, non-overlapping ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _points_to_ranges(points: Iterable[int]) -> list[tuple[int, int]]:
    return _normalize((cp, cp) for cp in points)


_DOTTED_I = (0x130, 0x131)  # İ and ı: case variants of i for Python, not Go
_I_LIKE = frozenset((ord("i"), ord("I")) + _DOTTED_I)


def _fold_go(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Close a set under simple case folding, as Go's (?i) does before
    negating a class: letters gain their other cases (k also U+212A KELVIN
    SIGN, s also U+017F LONG S), but İ and ı stay alone."""
    points = {cp for lo, hi in ranges for cp in range(lo, hi + 1)}
    extra = set()
    for cp in points:
        if cp in _DOTTED_I:
            continue
        ch = chr(cp)
        for v in (ch.lower(), ch.upper(), ch.casefold()):
            if len(v) == 1 and ord(v) not in _DOTTED_I:
                extra.add(ord(v))
    points |= extra
    if points & {ord("k"), ord("K")}:
        points.add(0x212A)
    if points & {ord("s"), ord("S")}:
        points.add(0x17F)
    return _points_to_ranges(points)


def _class_regex(ranges: list[tuple[int, int]], negate: bool, fold: bool) -> str:
    """Python for the Go class `ranges` (negated if `negate`), to be used
    where Go's (?i) is `fold`.

    Python's re, unlike Go, takes İ and ı for case variants of i and I, so
    under (?i) a class holding any of the four is split: İ and ı are kept out
    of the folded part and tested case-sensitively on their own."""
    xs = _normalize(ranges)

    def plain(rs: list[tuple[int, int]], neg: bool) -> str:
        if not rs:
            return "[\\U00000000-\\U0010ffff]" if neg else ""
        return ("[^" if neg else "[") + _ranges(rs) + "]"

    touches = any(lo <= cp <= hi for cp in _I_LIKE for lo, hi in xs)
    if not fold or not touches:
        return plain(xs, negate) or "[^\\U00000000-\\U0010ffff]"
    members = [cp for cp in _DOTTED_I if any(lo <= cp <= hi for lo, hi in xs) != negate]
    rest = _normalize(
        (max(lo, hi_lo), min(hi, hi_hi))
        for lo, hi in xs
        for hi_lo, hi_hi in _complement(_points_to_ranges(_DOTTED_I))
        if max(lo, hi_lo) <= min(hi, hi_hi)
    )
    alts = []
    main = plain(rest, negate)
    if main:
        alts.append("(?!(?-i:[\\U00000130\\U00000131]))" + main)
    if members:
        alts.append("(?-i:[" + "".join(_cp(cp) for cp in members) + "])")
    if not alts:
        return "[^\\U00000000-\\U0010ffff]"
    return "(?:" + "|".join(alts) + ")"


def _unicode_class(p: str, i: int) -> tuple[list[tuple[int, int]], bool, int]:
    """The \\p / \\P escape at p[i]: (ranges, negated, next index)."""
    negate = p[i + 1] == "P"
    j = i + 2
    if j >= len(p):
        raise _Unsupported("bad \\p")
    if p[j] == "{":
        close = p.find("}", j)
        if close < 0:
            raise _Unsupported("bad \\p")
        name, j = p[j + 1 : close], close + 1
        if name.startswith("^"):
            negate, name = not negate, name[1:]
    else:
        name, j = p[j], j + 1
    return list(_category_ranges(name)), negate, j


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return "".join(_cp(lo) if lo == hi else f"{_cp(lo)}-{_cp(hi)}" for lo, hi in ranges)


_WORD = "[0-9A-Za-z_]"
# Go's \b and \B: ASCII word characters, and (?i) does not widen them
_ASCII_B = f"(?-i:(?<!{_WORD})(?={_WORD})|(?<={_WORD})(?!{_WORD}))"
_ASCII_NOT_B = f"(?-i:(?<!{_WORD})(?!{_WORD})|(?<={_WORD})(?={_WORD}))"
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS_ONLY = re.compile(r"\(\?[imsU-]*\)")


class _Unsupported(ValueError):
    pass


def _literal(cp: int, fold: bool) -> str:
    if fold and cp in _I_LIKE:
        return _class_regex([(cp, cp)], False, True)
    return re.escape(chr(cp))


def _cp(c: int) -> str:
    return f"\\U{c:08x}"


def compile(pattern: str) -> re.Pattern:  # noqa: A001 - the module's one entry point
    """Compile Go regexp `pattern`; ValueError/re.error when Go would refuse it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(_re2_to_python(pattern))


def _re2_to_python(p: str) -> str:
    """Rewrite a Go regexp so Python's re gives the same yes/no answer to
    "does it match somewhere in s". Differences handled: ASCII-only \\d \\s
    \\w \\b; `$` is end of text unless (?m); \\z; (?flags) in mid-pattern
    (applies to the rest of the group, across '|'); POSIX [[:classes:]];
    \\Q...\\E; octal and \\x{...} escapes; '{' that is not a repeat is a
    literal; \\pL-style general categories. Constructs Go rejects
    (lookaround, backreferences, possessive and nested repeats, counts over
    1000, unknown escapes) raise, as do Unicode scripts (\\p{Greek}),
    which Python's unicodedata cannot list."""
    out: list[str] = []
    # Go's (?flags) changes the flags for the rest of the enclosing group;
    # Python only has scoped (?flags:...) groups, so each one opens such a
    # "wrap", closed at the group's ')' (and closed and reopened around each
    # '|'). An opener is emitted lazily, just before the next item, so that
    # a quantifier right after (?flags) still applies to the item before it
    # as in Go ("a(?i)*" is "a*").
    # per open group: (flags on entry, wraps open in the enclosing group,
    # where in `out` the group starts)
    stack: list[tuple[frozenset, list[str], int]] = []
    flags: frozenset = frozenset()
    wraps: list[str] = []  # emitted openers to close at this group's end
    pending: list[str] = []  # openers to emit before the next item
    i, n = 0, len(p)
    last_repeatable = False  # the previous item can take a quantifier
    last_was_repeat = False  # ... and is itself a repetition
    after_flags = False  # a (?flags) group came since that item
    item_start = 0  # where in `out` the previous item starts

    def escape_value(i: int) -> tuple[int, int]:
        """Parse the escape at p[i] == '\\' that denotes one character.
        Returns (code point, next index); raises if it is not one."""
        if i + 1 >= n:
            raise _Unsupported("trailing backslash")
        e = p[i + 1]
        j = i + 2
        if "1" <= e <= "7" and not (j < n and "0" <= p[j] <= "7"):
            raise _Unsupported("backreference")
        if "0" <= e <= "7":
            k = j
            while k < n and k < j + 2 and "0" <= p[k] <= "7":
                k += 1
            return int(p[i + 1 : k], 8), k
        if e == "x":
            if j < n and p[j] == "{":
                close = p.find("}", j)
                digits = p[j + 1 : close] if close > 0 else ""
                if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise _Unsupported("bad \\x{}")
                v = int(digits, 16)
                if v > 0x10FFFF:
                    raise _Unsupported("bad \\x{}")
                return v, close + 1
            digits = p[j : j + 2]
            if len(digits) < 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise _Unsupported("bad \\x")
            return int(digits, 16), j + 2
        simple = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
        if e in simple:
            return simple[e], j
        if ord(e) < 128 and not e.isalnum():
            return ord(e), j
        raise _Unsupported(f"invalid escape \\{e}")

    def open_group(opener: str, new_flags: frozenset) -> None:
        nonlocal flags, wraps
        stack.append((flags, wraps, len(out)))
        out.append(opener)
        flags, wraps = new_flags, []

    def check_repeat() -> None:
        # Go forbids a repetition directly after another ("a**"), but one
        # after (?flags) repeats the repetition: "a*(?i)?" is "(?:a*)?"
        if not last_repeatable:
            raise _Unsupported("missing argument to repetition operator")
        if last_was_repeat:
            if not after_flags:
                raise _Unsupported("invalid nested repetition operator")
            out[item_start:] = ["(?:" + "".join(out[item_start:]) + ")"]

    def flag_text(new: frozenset, old: frozenset) -> str:
        on = "".join(sorted(f for f in new - old if f in "ims"))
        off = "".join(sorted(f for f in old - new if f in "ims"))
        return on + ("-" + off if off else "")

    while i < n:
        c = p[i]
        repeatable, is_repeat = True, False
        starts_item = not (
            c in "*+?|)" or (c == "{" and _REPEAT.match(p, i)) or _FLAGS_ONLY.match(p, i)
        )
        if starts_item and pending:
            out.extend(pending)
            wraps = wraps + pending
            pending = []
        if starts_item:
            item_start = len(out)
        flags_only = False
        if c == "\\":
            e = p[i + 1] if i + 1 < n else ""
            if e in ("d", "s", "w", "D", "S", "W"):
                # a negated class rather than the complement: under (?i)
                # Python, like Go, then also excludes the case variants
                out.append(_class_regex(_PERL[e.lower()], e.isupper(), "i" in flags))
                i += 2
            elif e == "b":
                out.append(_ASCII_B)
                i += 2
            elif e == "B":
                out.append(_ASCII_NOT_B)
                i += 2
            elif e == "A":
                out.append("(?:\\A)")  # grouped: Go lets assertions repeat
                i += 2
            elif e == "z":
                out.append("(?:\\Z)")
                i += 2
            elif e == "C":
                out.append("(?s:.)")
                i += 2
            elif e == "Q":
                end = p.find("\\E", i + 2)
                literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
                i = n if end < 0 else end + 2
                if not literal:
                    repeatable = last_repeatable
                    is_repeat = last_was_repeat
                    continue
                out.append("".join(_literal(ord(ch), "i" in flags) for ch in literal[:-1]))
                out.append(_literal(ord(literal[-1]), "i" in flags))
            elif e in ("p", "P"):
                cls, neg, i = _unicode_class(p, i)
                out.append(_class_regex(cls, neg, "i" in flags))
            else:
                v, i = escape_value(i)
                out.append(_literal(v, "i" in flags))
        elif c == "[":
            i = _translate_class(p, i, out, escape_value, "i" in flags)
        elif c == "(":
            repeatable = False  # nothing to repeat right after '('
            if p.startswith("(?P<", i):
                close = p.find(">", i)
                name = p[i + 4 : close] if close > 0 else ""
                if not name or not all(ch == "_" or (ch.isalnum() and ord(ch) < 128) for ch in name):
                    raise _Unsupported("bad group name")
                open_group(f"(?P<{name}>", flags)
                i = close + 1
            elif p.startswith("(?", i):
                # flags: (?ims-U) for the rest of the group, (?i:...) scoped
                j = i + 2
                new, sign, saw = set(flags), 1, False
                while j < n and p[j] in "imsU-":
                    if p[j] == "-":
                        if sign < 0:
                            raise _Unsupported("bad flags")
                        sign, saw = -1, False
                    else:
                        (new.add if sign > 0 else new.discard)(p[j])
                        saw = True
                    j += 1
                if j >= n or p[j] not in ":)" or (sign < 0 and not saw):
                    # lookaround, comments, atomic groups, (?<name>...): Go
                    # (1.19) rejects them all
                    raise _Unsupported("unsupported group")
                newf = frozenset(new)
                text = flag_text(newf, flags)
                if p[j] == ":":
                    open_group(f"(?{text}:", newf)
                else:
                    if text:
                        pending = pending + [f"(?{text}:"]
                    flags = newf
                    flags_only = True
                    # not an item: what precedes it keeps its status
                    repeatable, is_repeat = last_repeatable, last_was_repeat
                i = j + 1
            else:
                open_group("(", flags)
                i += 1
        elif c == ")":
            if not stack:
                raise _Unsupported("unbalanced )")
            out.append(")" * len(wraps) + ")")
            flags, wraps, item_start = stack.pop()
            pending = []
            i += 1
        elif c == "|":
            out.append(")" * len(wraps) + "|")
            pending = wraps + pending
            wraps = []
            repeatable = False
            i += 1
        elif c in "*+?":
            check_repeat()
            out.append(c)
            i += 1
            if i < n and p[i] == "?":
                out.append("?")
                i += 1
            is_repeat = True
        elif c == "{":
            m = _REPEAT.match(p, i)
            if m:
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                if lo > 1000 or hi > 1000 or (hi >= 0 and hi < lo):
                    raise _Unsupported("invalid repeat count")
                check_repeat()
                out.append(m.group(0))
                i = m.end()
                if i < n and p[i] == "?":
                    out.append("?")
                    i += 1
                is_repeat = True
            else:
                out.append("\\{")
                i += 1
        elif c == "$":
            out.append("(?:$)" if "m" in flags else "(?:\\Z)")
            i += 1
        elif c == "^":
            out.append("(?:^)")
            i += 1
        elif c == ".":
            out.append(".")
            i += 1
        else:
            out.append(_literal(ord(c), "i" in flags))
            i += 1
        last_repeatable, last_was_repeat = repeatable, is_repeat
        after_flags = flags_only
    if stack:
        raise _Unsupported("missing )")
    out.append(")" * len(wraps))
    return "".join(out)


def _translate_class(
    p: str, i: int, out: list[str], escape_value: Callable[[int], tuple[int, int]], fold: bool
) -> int:
    """Translate the class starting at p[i] == '['; returns the index past
    its closing ']'. The class is gathered as a set of code points; negated
    pieces ([:^alpha:], \\W, \\PL) are complemented there, after case
    folding when (?i) is on, as Go does."""

    def negated(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return _complement(_fold_go(ranges) if fold else _normalize(ranges))

    n = len(p)
    j = i + 1
    ranges: list[tuple[int, int]] = []
    negate = False
    if j < n and p[j] == "^":
        negate = True
        j += 1
    first = True
    while True:
        if j >= n:
            raise _Unsupported("missing ]")
        c = p[j]
        if c == "]" and not first:
            j += 1
            break
        first = False
        if p.startswith("[:", j):
            close = p.find(":]", j + 2)
            name = p[j + 2 : close] if close > 0 else ""
            if name in _POSIX:
                ranges += _POSIX[name]
                j = close + 2
                continue
            if name.startswith("^") and name[1:] in _POSIX:
                ranges += negated(_POSIX[name[1:]])
                j = close + 2
                continue
        if c == "\\" and j + 1 < n and p[j + 1] in "dswDSW":
            e = p[j + 1]
            ranges += _PERL[e] if e in "dsw" else negated(_PERL[e.lower()])
            j += 2
            continue
        if c == "\\" and j + 1 < n and p[j + 1] in "pP":
            cls, neg, j = _unicode_class(p, j)
            ranges += negated(cls) if neg else cls
            continue
        if c == "\\" and j + 1 < n and p[j + 1] == "Q":
            raise _Unsupported("\\Q in a class")
        # a single character, maybe the start of a range
        if c == "\\":
            lo, j = escape_value(j)
        else:
            lo, j = ord(c), j + 1
        if j + 1 < n and p[j] == "-" and p[j + 1] != "]":
            if p[j + 1] == "\\":
                hi, j = escape_value(j + 1)
            else:
                hi, j = ord(p[j + 1]), j + 2
            if hi < lo:
                raise _Unsupported("invalid character class range")
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    out.append(_class_regex(ranges, negate, fold))
    return j
