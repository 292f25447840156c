"""containerd's filter language (package containerd/filters), in Python.

Every List call of containerd's API (images, containers, content, leases,
snapshots, plugins, events) takes filter strings such as

    labels."io.cri-containerd.kind"==sandbox,name~=^nginx

and `ctr` passes them through verbatim, so both the accepted syntax and the
error messages must be containerd's. This module re-implements the
behaviour of containerd's scanner, parser, unquoting and matcher (written
from their documented grammar and observed behaviour, not copied), down to
the quirks that users hit:

* A selector is `fieldpath [operator value]`; selectors joined by ',' must
  all match (All); parse_all() ORs whole filter strings (Any).
* Fields are [A-Za-z0-9_]+ runs or "double-quoted" strings with Go escapes,
  joined by '.'. Values are bare runs of printable non-space characters
  other than ',' (so `type==io.containerd.snapshotter.v1` is fine), or
  quoted. For `~=` only, a value may also be quoted with /.../ or |...|.
* '/', '|' and '"' *start a quoted token wherever they appear first*, even
  in a value: `topic==/tasks/exit` is a parse error ("invalid quote
  encountered") and `topic~=/tasks/*` parses /tasks/ as the regexp `tasks`
  then fails on the '*'. Write `topic=="/tasks/exit"` or `topic~=|^/tasks/|`.
* Whitespace is skipped before a token, but whatever follows a complete
  selector must be ',' or the end: "a==b , c" is an error, "a==b, c" is not.
* `==` needs the field present; `!=` and `~=` look only at the value
  (an absent field reads as its value, normally ""): `name!=x` matches
  objects without a name.
* A `~=` pattern is compiled when matching; a pattern that does not
  compile matches nothing (containerd logs it; it is not a parse error).
  Patterns use Go's RE2 syntax, translated to Python's `re` (see
  _re2_to_python) so the classes, anchors and flags mean what they mean
  in Go; constructs Go rejects are rejected here too.

Error messages read exactly like containerd's, e.g.
    filters: parse error: [labels. >|?|< foo]: expected field or quoted
where the marked character is the offending position. containerd marks a
single byte there; when the character is not ASCII that splits it, and
gRPC turns each stray byte into U+FFFD on the way to ctr, so the message
shows replacement characters, and so does ours. Positions (`pos`) are
character indices.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any as AnyT, Union

import structlog

from . import errdefs

__all__ = [
    "Adaptor",
    "Filter",
    "Always",
    "ALWAYS",
    "Any",
    "All",
    "Selector",
    "FilterSyntaxError",
    "FilterInvalidArgument",
    "parse",
    "parse_all",
    "adapt_mapping",
    "OP_PRESENT",
    "OP_EQUAL",
    "OP_NOT_EQUAL",
    "OP_MATCHES",
]

log = structlog.get_logger(__name__)

# An adaptor maps a field path to (value, present). Objects with a
# `field(path)` method (Go's Adaptor interface) are accepted as well.
Adaptor = Union[Callable[[list[str]], tuple[str, bool]], AnyT]


# ---------------------------------------------------------------------------
# errors


class FilterSyntaxError(ValueError):
    """A filter string does not parse. str() is containerd's message;
    `input`, `pos` (character index) and `reason` give the parts."""

    def __init__(self, input: str, pos: int, reason: str):
        self.input = input
        self.pos = pos
        self.reason = reason
        super().__init__("filters: parse error: " + _locate(input, pos, reason))


class FilterInvalidArgument(FilterSyntaxError, errdefs.InvalidArgument):
    """What parse_all() raises: containerd's ParseAll wraps the parse error
    in ErrInvalidArgument, so the message gains ": invalid argument" and
    the error maps to gRPC INVALID_ARGUMENT."""

    def __init__(self, cause: FilterSyntaxError):
        self.input = cause.input
        self.pos = cause.pos
        self.reason = cause.reason
        errdefs.InvalidArgument.__init__(self, str(cause))


def _locate(text: str, pos: int, msg: str) -> str:
    if pos < len(text):
        mark, after = text[pos], text[pos + 1 :]
        if ord(mark) >= 0x80:
            # containerd marks one *byte*, splitting the character; gRPC
            # then sends each stray byte as U+FFFD, which is what ctr prints
            size = len(mark.encode("utf-8", "surrogatepass"))
            mark, after = "\ufffd", "\ufffd" * (size - 1) + after
        return f"[{text[:pos]} >|{mark}|< {after}]: {msg}"
    return f"[{text}]: {msg}"


# ---------------------------------------------------------------------------
# scanner

# next() returns a one-character str, or one of these two markers.
_EOF = -1
_ILLEGAL = -7
# token kinds; any other token is the (unexpected) character itself
T_EOF = _EOF
T_QUOTED = -2
T_VALUE = -3
T_FIELD = -4
T_SEPARATOR = -5
T_OPERATOR = -6
T_ILLEGAL = _ILLEGAL

# Go's unicode.IsSpace
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _is_space(ch: AnyT) -> bool:
    return ch in _SPACES if isinstance(ch, str) else False


def _is_field_char(ch: AnyT) -> bool:
    return isinstance(ch, str) and (ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9"))


def _is_value_char(ch: AnyT) -> bool:
    # printable, not a space, not ','; Go: letter, digit, number, graphic or
    # punctuation, i.e. a letter, mark, number, punctuation or symbol
    if not isinstance(ch, str) or ch == "," or ch in _SPACES:
        return False
    return unicodedata.category(ch)[0] in "LMNPS"


def _digit_val(ch: AnyT) -> int:
    if isinstance(ch, str):
        if "0" <= ch <= "9":
            return ord(ch) - 48
        if "a" <= ch <= "f":
            return ord(ch) - 87
        if "A" <= ch <= "F":
            return ord(ch) - 55
    return 16  # not a digit in any base we use


class _Scanner:
    """Tokenizer with containerd's quirks: one character of lookahead that
    does not skip spaces, a sticky first error, and a `value` mode switched
    on by an operator so the following run is read as a value."""

    def __init__(self, text: str):
        self.input = text
        self.pos = 0  # start of the current character
        self.ppos = 0  # just past it
        self.value = False
        self.err = ""

    def next(self) -> AnyT:
        if self.pos >= len(self.input):
            return _EOF
        self.pos = self.ppos
        if self.ppos >= len(self.input):
            return _EOF
        ch = self.input[self.ppos]
        self.ppos += 1
        # U+FFFD and lone surrogates are what Go sees as undecodable bytes
        if ch == "\ufffd" or "\ud800" <= ch <= "\udfff":
            self.error("rune error")
            return _ILLEGAL
        if ch == "\x00":
            self.error("unexpected null")
            return _ILLEGAL
        return ch

    def peek(self) -> AnyT:
        pos, ppos = self.pos, self.ppos
        ch = self.next()
        self.pos, self.ppos = pos, ppos
        return ch

    def scan(self) -> tuple[int, AnyT, str]:
        """(position, token kind, token text)."""
        ch = self.next()
        pos = self.pos
        while True:
            if ch == _EOF or ch == _ILLEGAL:
                break
            if ch in ('/', '|', '"'):
                kind = T_QUOTED if self._scan_quoted(ch) else T_ILLEGAL
                return pos, kind, self.input[pos : self.ppos]
            if ch in (",", "."):
                self.value = False
                return pos, T_SEPARATOR, self.input[pos : self.ppos]
            if ch in ("=", "!", "~"):
                while self.peek() in ("=", "!", "~"):
                    self.next()
                self.value = True
                return pos, T_OPERATOR, self.input[pos : self.ppos]
            if _is_space(ch):
                ch = self.next()
                pos = self.pos
                continue
            if self.value:
                while _is_value_char(self.peek()):
                    self.next()
                self.value = False
                return pos, T_VALUE, self.input[pos : self.ppos]
            if _is_field_char(ch):
                while _is_field_char(self.peek()):
                    self.next()
                return pos, T_FIELD, self.input[pos : self.ppos]
            break
        return self.pos, ch, ""

    def _scan_quoted(self, quote: str) -> bool:
        legal = True
        ch = self.next()
        while ch != quote:
            if ch == "\n" or not isinstance(ch, str):
                self.error("quoted literal not terminated")
                return False
            if ch == "\\":
                ch, ok = self._scan_escape(quote)
                legal = legal and ok
            else:
                ch = self.next()
        return legal

    def _scan_escape(self, quote: str) -> tuple[AnyT, bool]:
        ch = self.next()  # the character after the backslash
        if ch in ("a", "b", "f", "n", "r", "t", "v", "\\", quote):
            return self.next(), True
        if isinstance(ch, str) and "0" <= ch <= "7":
            return self._scan_digits(ch, 8, 3)
        if ch == "x":
            return self._scan_digits(self.next(), 16, 2)
        if ch == "u":
            return self._scan_digits(self.next(), 16, 4)
        if ch == "U":
            return self._scan_digits(self.next(), 16, 8)
        self.error("illegal escape sequence")
        return ch, False

    def _scan_digits(self, ch: AnyT, base: int, n: int) -> tuple[AnyT, bool]:
        while n > 0 and _digit_val(ch) < base:
            ch = self.next()
            n -= 1
        if n > 0:
            self.error("illegal numeric escape sequence")
            return ch, False
        return ch, True

    def error(self, msg: str) -> None:
        if not self.err:
            self.err = msg


# ---------------------------------------------------------------------------
# unquoting (Go string-literal escapes; '/' and '|' act like '"')


class _QuoteSyntax(ValueError):
    def __str__(self) -> str:
        return "quote syntax error"


def _hex(s: str) -> int:
    if not all(c in "0123456789abcdefABCDEF" for c in s):
        raise _QuoteSyntax()
    return int(s, 16)


def _unquote(s: str) -> str:
    if len(s) < 2 or s[0] != s[-1]:
        raise _QuoteSyntax()
    quote, body = s[0], s[1:-1]
    if quote == "`":
        if "`" in body:
            raise _QuoteSyntax()
        return body.replace("\r", "")
    if quote not in "\"'|/" or "\n" in body:
        raise _QuoteSyntax()
    if "\\" not in body and quote not in body:
        if quote != "'":
            return body
        if len(body) == 1 and body != "\ufffd":
            return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            raise _QuoteSyntax()
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
        else:
            if i + 1 >= len(body):
                raise _QuoteSyntax()
            e = body[i + 1]
            i += 2
            simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
            if e in simple:
                out.append(simple[e])
            elif e in "xuU":
                n = {"x": 2, "u": 4, "U": 8}[e]
                if len(body) - i < n:
                    raise _QuoteSyntax()
                v = _hex(body[i : i + n])
                i += n
                if e == "x":
                    out.append(v)  # a raw byte, possibly not UTF-8
                elif v > 0x10FFFF:
                    raise _QuoteSyntax()
                elif v < 0x80:
                    out.append(v)
                else:
                    # like Go's utf8.EncodeRune: surrogates become U+FFFD
                    r = "\ufffd" if 0xD800 <= v <= 0xDFFF else chr(v)
                    out += r.encode("utf-8")
            elif "0" <= e <= "7":
                digits = body[i : i + 2]
                if len(digits) < 2 or not all("0" <= d <= "7" for d in digits):
                    raise _QuoteSyntax()
                v = int(e + digits, 8)
                i += 2
                if v > 255:
                    raise _QuoteSyntax()
                out.append(v)
            elif e in "'\"|/":
                if e != quote:
                    raise _QuoteSyntax()
                out.append(ord(e))
            else:
                raise _QuoteSyntax()
        if quote == "'" and i < len(body):
            raise _QuoteSyntax()  # a character literal holds one character
    return out.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# filters

OP_PRESENT = "?"
OP_EQUAL = "=="
OP_NOT_EQUAL = "!="
OP_MATCHES = "~="


def _field_of(adaptor: Adaptor) -> Callable[[list[str]], tuple[str, bool]]:
    return adaptor if callable(adaptor) else adaptor.field


class Filter:
    """Anything with match(adaptor) -> bool."""

    def match(self, adaptor: Adaptor) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, adaptor: Adaptor) -> bool:
        return self.match(adaptor)


class Always(Filter):
    """Matches everything (the empty filter)."""

    def match(self, adaptor: Adaptor) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS = Always()


class Any(Filter):  # noqa: A001 - containerd's name
    """True if any of the filters matches (none: False)."""

    def __init__(self, filters: Iterable[Filter]):
        self.filters = list(filters)

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)

    def __repr__(self) -> str:
        return f"Any({self.filters!r})"


class All(Filter):
    """True if every filter matches (none: True)."""

    def __init__(self, filters: Iterable[Filter]):
        self.filters = list(filters)

    def match(self, adaptor: Adaptor) -> bool:
        return all(f.match(adaptor) for f in self.filters)

    def __repr__(self) -> str:
        return f"All({self.filters!r})"


_BAD_PATTERN = object()


class Selector(Filter):
    """One `fieldpath op value` test."""

    def __init__(self, fieldpath: list[str], operator: str = OP_PRESENT, value: str = ""):
        if operator not in (OP_PRESENT, OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES):
            raise ValueError(f"unknown operator {operator!r}")
        self.fieldpath = list(fieldpath)
        self.operator = operator
        self.value = value
        self._re: AnyT = None

    def match(self, adaptor: Adaptor) -> bool:
        value, present = _field_of(adaptor)(self.fieldpath)
        op = self.operator
        if op == OP_PRESENT:
            return bool(present)
        if op == OP_EQUAL:
            return bool(present) and value == self.value
        if op == OP_NOT_EQUAL:
            return value != self.value
        # OP_MATCHES
        if self._re is None:
            try:
                self._re = _compile_re2(self.value)
            except (re.error, ValueError, OverflowError, RecursionError):
                self._re = _BAD_PATTERN
        if self._re is _BAD_PATTERN:
            log.error(f"error compiling regexp {_go_quote(self.value)}")
            return False
        return self._re.search(value) is not None

    def __repr__(self) -> str:
        return f"Selector({self.fieldpath!r}, {self.operator!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Selector)
            and (self.fieldpath, self.operator, self.value) == (other.fieldpath, other.operator, other.value)
        )

    __hash__ = None  # type: ignore[assignment]


def _go_quote(s: str) -> str:
    """Go's %q, near enough for log lines and operators."""
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


# ---------------------------------------------------------------------------
# parser


class _Parser:
    def __init__(self, text: str):
        self.input = text
        self.sc = _Scanner(text)

    def error(self, pos: int, msg: str) -> FilterSyntaxError:
        return FilterSyntaxError(self.input, pos, msg)

    def selectors(self) -> Filter:
        ss = [self.selector()]
        while True:
            ch = self.sc.peek()
            if ch == ",":
                pos, kind, _ = self.sc.scan()
                if kind != T_SEPARATOR:
                    raise self.error(pos, "expected a separator")
                ss.append(self.selector())
            elif ch == _EOF:
                return All(ss)
            else:
                shown = ch if isinstance(ch, str) else "\ufffd"
                raise self.error(self.sc.ppos, f"unexpected input: {shown}")

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.sc.peek() in (",", _EOF):
            return Selector(fieldpath, OP_PRESENT)
        op = self.operator()
        value = self.value(allow_alt_quotes=(op == OP_MATCHES))
        return Selector(fieldpath, op, value)

    def fieldpath(self) -> list[str]:
        fields = [self.field()]
        while self.sc.peek() == ".":
            pos, kind, _ = self.sc.scan()
            if kind != T_SEPARATOR:
                raise self.error(pos, "expected a field separator (`.`)")
            fields.append(self.field())
        return fields

    def field(self) -> str:
        pos, kind, text = self.sc.scan()
        if kind == T_FIELD:
            return text
        if kind == T_QUOTED:
            return self.unquote(pos, text, False)
        if kind == T_ILLEGAL:
            raise self.error(pos, self.sc.err)
        raise self.error(pos, "expected field or quoted")

    def operator(self) -> str:
        pos, kind, text = self.sc.scan()
        if kind == T_OPERATOR:
            if text in (OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES):
                return text
            raise self.error(pos, f"unsupported operator {_go_quote(text)}")
        if kind == T_ILLEGAL:
            raise self.error(pos, self.sc.err)
        raise self.error(pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, allow_alt_quotes: bool) -> str:
        pos, kind, text = self.sc.scan()
        if kind in (T_VALUE, T_FIELD):
            return text
        if kind == T_QUOTED:
            return self.unquote(pos, text, allow_alt_quotes)
        if kind == T_ILLEGAL:
            raise self.error(pos, self.sc.err)
        raise self.error(pos, "expected value or quoted")

    def unquote(self, pos: int, text: str, allow_alts: bool) -> str:
        if not allow_alts and text[0] not in ("'", '"'):
            raise self.error(pos, "invalid quote encountered")
        try:
            return _unquote(text)
        except _QuoteSyntax as exc:
            raise self.error(pos, f"unquoting failed: {exc}") from None


def parse(s: str) -> Filter:
    """One filter string: ','-separated selectors, all of which must match.
    The empty string matches everything. Raises FilterSyntaxError."""
    if not isinstance(s, str):
        raise TypeError(f"filter must be a str, not {type(s).__name__}")
    if s == "":
        return ALWAYS
    return _Parser(s).selectors()


def parse_all(*ss: str) -> Filter:
    """Several filter strings, any of which may match; none matches
    everything. Raises FilterInvalidArgument (a FilterSyntaxError and an
    errdefs.InvalidArgument) whose message ends in ": invalid argument",
    as containerd's ParseAll does."""
    if not ss:
        return ALWAYS
    fs = []
    for s in ss:
        try:
            fs.append(parse(s))
        except FilterSyntaxError as exc:
            raise FilterInvalidArgument(exc) from None
    return Any(fs)


# ---------------------------------------------------------------------------
# adaptors

_MISSING = object()


def _leaf(value: AnyT, empty_is_absent: bool) -> tuple[str, bool]:
    if value is None or value is _MISSING:
        return "", False
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, str):
        return value, (value != "" or not empty_is_absent)
    if isinstance(value, (int, float)):
        return str(value), True
    if isinstance(value, (bytes, Mapping, list, tuple, set)):
        return "", False
    return str(value), True


def adapt_mapping(
    obj: AnyT,
    *,
    maps: Iterable[str] = ("labels", "annotations"),
    empty_is_absent: bool = True,
) -> Callable[[list[str]], tuple[str, bool]]:
    """A generic adaptor over nested dicts (or objects with attributes).

    Mirrors containerd's hand-written adaptors:
    * a field named in `maps` (labels, annotations) is a string map: the
      rest of the path is joined with '.' and looked up, so labels.a.b and
      labels."a.b" both mean the key "a.b"; a key that exists is present
      even when its value is empty; an empty map has nothing present;
    * other fields descend one path component at a time (a dict key that
      itself contains dots is found too); a string leaf is present when not
      empty (set empty_is_absent=False to count any existing key), bools
      read "true"/"false", numbers their decimal form; reaching a dict,
      list or None reads as absent.
    """
    map_names = frozenset(maps)

    def lookup(node: AnyT, key: str) -> AnyT:
        if isinstance(node, Mapping):
            return node.get(key, _MISSING)
        if node is None or key.startswith("_") or isinstance(node, (str, bytes, int, float, list, tuple)):
            return _MISSING
        return getattr(node, key, _MISSING)

    def resolve(node: AnyT, path: list[str]) -> tuple[str, bool]:
        if not path:
            return _leaf(node, empty_is_absent)
        head, rest = path[0], path[1:]
        child = lookup(node, head)
        if child is not _MISSING and head in map_names and isinstance(child, Mapping):
            if not child or not rest:
                return "", False
            key = ".".join(rest)
            if key not in child:
                return "", False
            value = child[key]
            return ("" if value is None else str(value)), value is not None
        if child is not _MISSING:
            found = resolve(child, rest)
            if found[1] or not rest:
                return found
        # a key with dots in it: try "a.b", "a.b.c", ... as one key
        for n in range(2, len(path) + 1):
            child = lookup(node, ".".join(path[:n]))
            if child is not _MISSING:
                found = resolve(child, path[n:])
                if found[1]:
                    return found
        return "", False

    def field(fieldpath: list[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        return resolve(obj, list(fieldpath))

    return field


# ---------------------------------------------------------------------------
# Go RE2 syntax -> Python re

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


def _compile_re2(pattern: str) -> re.Pattern:
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
