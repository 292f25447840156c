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
  Patterns use Go's RE2 syntax and are matched by RE2 itself, in time
  linear in the text (core/goregexp.py); constructs Go rejects are
  rejected here too.

Error messages read exactly like containerd's, e.g.
    filters: parse error: [labels. >|?|< foo]: expected field or quoted
where the marked character is the offending position. containerd marks a
single byte there; when the character is not ASCII that splits it, and
gRPC turns each stray byte into U+FFFD on the way to ctr, so the message
shows replacement characters, and so does ours. Positions (`pos`) are
character indices.
"""

from __future__ import annotations

import abc
import asyncio
import queue
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any as AnyT, Union

import structlog

from pycontainerd.pkg import errdefs

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
    "parse_all_off_loop",
    "select",
    "matching",
    "match_off_loop",
    "is_heavy",
    "selector_count",
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


class Filter(abc.ABC):
    """Anything with match(adaptor) -> bool."""

    @abc.abstractmethod
    def match(self, adaptor: Adaptor) -> bool:
        """Whether the object the adaptor reads from is selected."""

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
        self.selectors = sum(selector_count(f) for f in self.filters)  # counted once: see is_heavy

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)

    def __repr__(self) -> str:
        return f"Any({self.filters!r})"


class All(Filter):
    """True if every filter matches (none: True)."""

    def __init__(self, filters: Iterable[Filter]):
        self.filters = list(filters)
        self.selectors = sum(selector_count(f) for f in self.filters)  # counted once: see is_heavy

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
                from . import goregexp  # only filters that use ~= pay for it

                self._re = goregexp.compile(self.value)
            except ValueError as exc:
                # as containerd: logged, and the selector matches nothing
                log.error("error compiling regexp", pattern=errdefs.go_quote(self.value[:256]), error=str(exc)[:256])
                self._re = _BAD_PATTERN
        if self._re is _BAD_PATTERN:
            return False
        try:
            return self._re.search(value) is not None
        except UnicodeEncodeError:  # a lone surrogate: no Go string holds one
            return False

    def __repr__(self) -> str:
        return f"Selector({self.fieldpath!r}, {self.operator!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Selector)
            and (self.fieldpath, self.operator, self.value) == (other.fieldpath, other.operator, other.value)
        )

    __hash__ = None  # type: ignore[assignment]


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
            raise self.error(pos, f"unsupported operator {errdefs.go_quote(text)}")
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
# heavy filters stay off the event loop and off the metadata thread
#
# A request may carry up to 16 MiB of filter text (100k selectors, or one
# huge quoted value): scanning it takes seconds, and testing each object
# against 100k selectors takes seconds more per few hundred objects.
# containerd does that work on the request's own goroutine. Here it must
# not run on the loop (Version and every other call wait) nor on the
# metadata database's one thread (every namespace waits), nor on many
# threads at once (each one that holds the GIL slows the loop down). So
# heavy filter work runs on one lane of its own, a single daemon thread:
# heavy requests wait for each other, everyone else carries on, and a
# daemon that stops does not wait for them.

INLINE_PARSE_CHARS = 4096  # filter text scanned on the caller's thread
INLINE_MATCH_SELECTORS = 64  # a filter this small is no one's burden


class _Lane:
    """One daemon thread running submitted calls in order."""

    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[tuple[Callable[[], AnyT], asyncio.AbstractEventLoop, asyncio.Future]]" = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._mu = threading.Lock()

    async def run(self, fn: Callable[[], AnyT]) -> AnyT:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._mu:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="filters", daemon=True)
                self._thread.start()
        self._jobs.put((fn, loop, future))
        return await future

    def _work(self) -> None:
        while True:
            fn, loop, future = self._jobs.get()
            if future.cancelled():  # its caller went away while it waited
                continue
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the caller
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # that loop is closed
                pass


def _settle(future: asyncio.Future, result: AnyT, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_HEAVY = _Lane()


def selector_count(flt: Filter) -> int:
    """How many selectors `flt` tests (what one match costs, at most)."""
    if isinstance(flt, (Any, All)):
        return flt.selectors
    return 0 if flt is ALWAYS else 1


def is_heavy(flt: Filter) -> bool:
    return selector_count(flt) > INLINE_MATCH_SELECTORS


async def parse_all_off_loop(*ss: str) -> Filter:
    """parse_all(); long text is scanned on the heavy-filter lane."""
    if sum(len(s) for s in ss) <= INLINE_PARSE_CHARS:
        return parse_all(*ss)
    return await _HEAVY.run(lambda: parse_all(*ss))


async def matching(flt: Filter, fn: Callable[..., AnyT], *args: AnyT) -> AnyT:
    """fn(*args), work that tests objects against `flt`, off the loop: on
    the heavy-filter lane when `flt` is heavy, else on a worker thread."""
    if is_heavy(flt):
        return await _HEAVY.run(lambda: fn(*args))
    return await asyncio.to_thread(fn, *args)


async def select(flt: Filter, items: Iterable[AnyT], adapt: Callable[[AnyT], Adaptor]) -> list[AnyT]:
    """The items `flt` matches (each read through `adapt(item)`), in order."""
    items = list(items)
    if flt is ALWAYS:
        return items
    return await matching(flt, lambda: [x for x in items if flt.match(adapt(x))])


async def match_off_loop(flt: Filter, adaptor: Adaptor) -> bool:
    """flt.match(adaptor); a heavy filter is tested on the heavy-filter lane."""
    if is_heavy(flt):
        return await _HEAVY.run(lambda: flt.match(adaptor))
    return flt.match(adaptor)


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
