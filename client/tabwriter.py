"""Go's text/tabwriter (as of Go 1.19), reimplemented from its behaviour.

`ctr` prints every table through text/tabwriter, and pyctr has to print the
same bytes, so a Python-native formatter (str.ljust, a column-width pass)
is not good enough: tabwriter's "elastic tabstops" have rules of their own
that leak into the output, e.g. a trailing tab makes every row end with
padding, a line without a tab ends all columns (and flushes), the text after
the last tab of a line belongs to no column, and widths are counted in runes.
This module reproduces those rules. It is written from the documented and
tested behaviour of the Go package (the test-suite facts are replayed in
tests/test_tabwriter.py), not transcribed from its source.

How the formatter thinks
------------------------
Text is cut into *cells*, each terminated by '\\t' (a hard tab) or '\\v' (a
soft tab), or by the end of its line ('\\n' or '\\f'). Cell j of a line is in
column j; the last cell of a line (the text after its last tab) is in no
column. A *column block* is a maximal run of consecutive lines that all have
a (tab-terminated) cell in that column; blocks of column j+1 nest inside the
blocks of column j. A block's width is max(minwidth, widest cell + padding),
and each cell of the block is padded to that width. Formatting is done
recursively, one column deeper per level, printing lines as soon as the
widths of all their columns are known (the recursion is run from an
explicit stack, so it has no depth limit).

Buffered text is written out on flush(); write() also flushes by itself
after a line that has a single cell (no tab: it cannot influence any column)
and after every '\\f'.

Deviation forced by Python strings: Go's Escape character is the byte 0xff,
which valid UTF-8 text never contains. Here text is `str`, so the escape
character is ESCAPE = '\\udcff' (the lone surrogate that the
'surrogateescape' error handler gives to a stray 0xff byte); write() also
accepts `bytes`, decoded as UTF-8 with 'surrogateescape', so b'\\xff' works
as in Go. A real 'ÿ' (U+00FF) is ordinary text, exactly as in Go, where it
is encoded as two other bytes.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = [
    "TabWriter",
    "new_writer",
    "fprintln",
    "go_sprint_value",
    "ESCAPE",
    "FILTER_HTML",
    "STRIP_ESCAPE",
    "ALIGN_RIGHT",
    "DISCARD_EMPTY_COLUMNS",
    "TAB_INDENT",
    "DEBUG",
]

# Formatting flags, same bit values as Go's.
FILTER_HTML = 1 << 0  # HTML tags have width 0, entities (&...;) width 1
STRIP_ESCAPE = 1 << 1  # drop the ESCAPE characters bracketing escaped text
ALIGN_RIGHT = 1 << 2  # right-align cell contents (ignored if padchar is '\t')
DISCARD_EMPTY_COLUMNS = 1 << 3  # columns of empty soft-tab ('\v') cells get width 0
TAB_INDENT = 1 << 4  # pad leading empty cells with tabs whatever padchar is
DEBUG = 1 << 5  # print '|' between columns, '---' after each '\f'

# Go-style spellings, for code ported line by line from ctr.
FilterHTML = FILTER_HTML
StripEscape = STRIP_ESCAPE
AlignRight = ALIGN_RIGHT
DiscardEmptyColumns = DISCARD_EMPTY_COLUMNS
TabIndent = TAB_INDENT
Debug = DEBUG

ESCAPE = "\udcff"  # see the module docstring

_LINE_ENDS = ("\n", "\f")
_CELL_ENDS = ("\t", "\v", "\n", "\f")


class _Cell:
    """A finished cell: its text, its formatting width and whether a hard
    tab ended it (only hard-tab-free empty columns may be discarded)."""

    __slots__ = ("text", "width", "htab")

    def __init__(self, text: str, width: int, htab: bool):
        self.text = text
        self.width = width
        self.htab = htab

    def __repr__(self) -> str:  # debugging aid
        return f"_Cell({self.text!r}, {self.width}, htab={self.htab})"


class TabWriter:
    """An elastic-tabstop filter with Go's text/tabwriter semantics.

    Parameters are those of Go's tabwriter.NewWriter:

    minwidth  minimal cell width, padding included
    tabwidth  width of a tab in the output (used when padding with tabs)
    padding   added to the widest cell of a column to get its width
    padchar   the padding character; '\\t' means pad with tabs, assuming
              tab stops every `tabwidth` columns (and forces left alignment)
    flags     an OR of the flag constants of this module
    """

    def __init__(
        self,
        out: TextIO,
        minwidth: int,
        tabwidth: int,
        padding: int,
        padchar: str = " ",
        flags: int = 0,
    ):
        if minwidth < 0 or tabwidth < 0 or padding < 0:
            raise ValueError("negative minwidth, tabwidth, or padding")
        if not isinstance(padchar, str) or len(padchar) != 1:
            raise ValueError("padchar must be a single character")
        self._out = out
        self.minwidth = minwidth
        self.tabwidth = tabwidth
        self.padding = padding
        self.padchar = padchar
        if padchar == "\t":
            flags &= ~ALIGN_RIGHT  # tab padding can only align left
        self.flags = flags
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._reset()

    # ------------------------------------------------------------------
    # state

    def _reset(self) -> None:
        self._parts: list[str] = []  # text of the incomplete cell so far
        self._size = 0  # its length in characters
        self._width = 0  # its width, counted up to the last width update
        self._uncounted = 0  # characters appended since that update
        self._end_char = ""  # closes the escaped segment we are in, if any
        self._lines: list[list[_Cell]] = [[]]
        self._widths: list[int] = []  # widths of the columns being formatted
        self._pending: list[str] = []  # output produced by the current flush

    def _append(self, text: str) -> None:
        if text:
            self._parts.append(text)
            self._size += len(text)
            self._uncounted += len(text)

    def _update_width(self) -> None:
        self._width += self._uncounted
        self._uncounted = 0

    def _terminate_cell(self, htab: bool) -> int:
        line = self._lines[-1]
        line.append(_Cell("".join(self._parts), self._width, htab))
        self._parts = []
        self._size = 0
        self._width = 0
        self._uncounted = 0
        return len(line)

    def _start_escape(self, ch: str) -> None:
        self._end_char = {ESCAPE: ESCAPE, "<": ">", "&": ";"}[ch]

    def _end_escape(self) -> None:
        if self._end_char == ESCAPE:
            self._update_width()
            if not self.flags & STRIP_ESCAPE:
                self._width -= 2  # the two ESCAPE characters take no room
        elif self._end_char == ";":
            self._width += 1  # an HTML entity counts as one character
        # an HTML tag ('>') has no width
        self._uncounted = 0
        self._end_char = ""

    # ------------------------------------------------------------------
    # input

    def write(self, text: str | bytes) -> int:
        """Buffer `text`; returns its length. Output happens on flush(),
        which write() does by itself after a tabless line or a '\\f'."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = self._decoder.decode(bytes(text))
            result = len(text)
        else:
            data = text
            result = len(text)
        self._consume(data)
        return result

    def _consume(self, data: str) -> None:
        start = 0  # data[start:i] is not yet appended to the cell
        html = bool(self.flags & FILTER_HTML)
        strip = bool(self.flags & STRIP_ESCAPE)
        for i, ch in enumerate(data):
            if not self._end_char:
                if ch in _CELL_ENDS:
                    self._append(data[start:i])
                    self._update_width()
                    start = i + 1
                    ncells = self._terminate_cell(ch == "\t")
                    if ch in _LINE_ENDS:
                        self._lines.append([])
                        # A '\f' ends every column; a line with one cell
                        # cannot affect later lines: both flush.
                        if ch == "\f" or ncells == 1:
                            self._flush_buffer()
                            if ch == "\f" and self.flags & DEBUG:
                                self._out.write("---\n")
                elif ch == ESCAPE:
                    self._append(data[start:i])
                    self._update_width()
                    start = i + 1 if strip else i
                    self._start_escape(ch)
                elif html and ch in ("<", "&"):
                    self._append(data[start:i])
                    self._update_width()
                    start = i
                    self._start_escape(ch)
            elif ch == self._end_char:
                stop = i if (ch == ESCAPE and strip) else i + 1
                self._append(data[start:stop])
                start = i + 1
                self._end_escape()
        self._append(data[start:])

    def flush(self) -> None:
        """Format and write out everything buffered. An unterminated
        escaped segment counts as complete."""
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._consume(tail)
        self._flush_buffer()

    def _flush_buffer(self) -> None:
        try:
            if self._size > 0:
                if self._end_char:
                    self._end_escape()
                self._terminate_cell(False)
            self._format(0, len(self._lines))
            if self._pending:
                self._out.write("".join(self._pending))
        finally:
            self._reset()

    # Go spellings
    Write = write
    Flush = flush

    # ------------------------------------------------------------------
    # output

    def _pad(self, textw: int, cellw: int, use_tabs: bool) -> None:
        if self.padchar == "\t" or use_tabs:
            if self.tabwidth == 0:
                return  # tabs have no width: no padding is possible
            # round the cell up to the next tab stop, then cover the gap
            # with as many tabs as it takes
            cellw = -(-cellw // self.tabwidth) * self.tabwidth
            gap = cellw - textw
            if gap < 0:
                raise AssertionError("tabwriter: internal error")
            self._pending.append("\t" * -(-gap // self.tabwidth))
            return
        if cellw > textw:
            self._pending.append(self.padchar * (cellw - textw))

    def _write_lines(self, line0: int, line1: int) -> None:
        out = self._pending
        widths = self._widths
        debug = self.flags & DEBUG
        right = self.flags & ALIGN_RIGHT
        for i in range(line0, line1):
            use_tabs = bool(self.flags & TAB_INDENT)
            for j, c in enumerate(self._lines[i]):
                if j > 0 and debug:
                    out.append("|")
                in_column = j < len(widths)
                if not c.text:
                    if in_column:
                        self._pad(c.width, widths[j], use_tabs)
                    continue
                use_tabs = False
                if right:
                    if in_column:
                        self._pad(c.width, widths[j], False)
                    out.append(c.text)
                else:
                    out.append(c.text)
                    if in_column:
                        self._pad(c.width, widths[j], False)
            if i + 1 == len(self._lines):
                # the last buffered line has no line break of its own
                out.append("".join(self._parts))
            else:
                out.append("\n")

    def _format(self, line0: int, line1: int) -> None:
        """Print lines [line0, line1). Go's format() recurses once per
        column; here each level is a generator driven from an explicit
        stack, so a line with thousands of cells cannot exhaust Python's
        recursion limit."""
        stack = [self._format_level(line0, line1)]
        while stack:
            try:
                sub = next(stack[-1])
            except StopIteration:
                stack.pop()
            else:
                stack.append(self._format_level(*sub))

    def _format_level(self, line0: int, line1: int) -> Iterator[tuple[int, int]]:
        """One level of the column recursion: lines [line0, line1), whose
        columns left of len(self._widths) have known widths. Yields the
        (line0, line1) range of each nested call to run before resuming."""
        column = len(self._widths)
        this = line0
        while this < line1:
            if column < len(self._lines[this]) - 1:
                # A block of this column starts here: everything before it
                # is complete already.
                self._write_lines(line0, this)
                line0 = this
                width = self.minwidth
                discardable = True
                while this < line1:
                    line = self._lines[this]
                    if column >= len(line) - 1:
                        break
                    c = line[column]
                    width = max(width, c.width + self.padding)
                    if c.width > 0 or c.htab:
                        discardable = False
                    this += 1
                if discardable and self.flags & DISCARD_EMPTY_COLUMNS:
                    width = 0
                # with this column's width known, do the columns to its right
                self._widths.append(width)
                yield (line0, this)
                self._widths.pop()
                line0 = this
                # Go's loop steps past the line that ended the block, which
                # cannot start a block of this column anyway.
            this += 1
        self._write_lines(line0, line1)


def new_writer(
    out: TextIO, minwidth: int, tabwidth: int, padding: int, padchar: str = " ", flags: int = 0
) -> TabWriter:
    """tabwriter.NewWriter."""
    return TabWriter(out, minwidth, tabwidth, padding, padchar, flags)


def go_sprint_value(value: Any) -> str:
    """An operand as Go's %v would print it, for the types that differ from
    str(): bools ("true"), None ("<nil>"), lists/tuples ("[a b]"). Anything
    else is str()'d."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_sprint_value(v) for v in value) + "]"
    return str(value)


def fprintln(w: Any, *args: Any) -> int:
    """fmt.Fprintln: the operands, always separated by one space, then a
    newline, written to `w` (anything with a write(str) method). Returns
    the number of characters written.

    fmt.Fprintln(w, "Type:\\t", t) therefore yields "Type:\\t <t>\\n".
    """
    text = " ".join(go_sprint_value(a) for a in args) + "\n"
    w.write(text)
    return len(text)
