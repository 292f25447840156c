"""Tests for client/tabwriter.py, the port of Go's text/tabwriter.

The expected outputs are literal strings. The ctr-shaped cases were worked
out by hand from tabwriter's rules (see the comments next to each); the
GO_FACTS table restates input/output pairs that Go's own tabwriter tests
assert, so a drift from Go's behaviour shows up here.
"""

from __future__ import annotations

import io

import pytest

from pycontainerd.client.tabwriter import (
    ALIGN_RIGHT,
    DEBUG,
    DISCARD_EMPTY_COLUMNS,
    ESCAPE,
    FILTER_HTML,
    STRIP_ESCAPE,
    TAB_INDENT,
    TabWriter,
    fprintln,
    go_sprint_value,
    new_writer,
)


def render(chunks, minwidth, tabwidth, padding, padchar=" ", flags=0) -> str:
    out = io.StringIO()
    w = TabWriter(out, minwidth, tabwidth, padding, padchar, flags)
    if isinstance(chunks, (str, bytes)):
        chunks = [chunks]
    for chunk in chunks:
        w.write(chunk)
    w.flush()
    return out.getvalue()


def pieces(src, how):
    """src cut all at once, one character at a time, or in growing slices
    (1, 2, 3, ... characters), as Go's own tests feed their writer."""
    if how == "whole":
        return [src]
    if how == "single":
        return [src[i : i + 1] for i in range(len(src))]
    out, i, d = [], 0, 1
    while i < len(src):
        out.append(src[i : i + d])
        i += d
        d += 1
    return out


# ---------------------------------------------------------------------------
# ctr's tables

PLUGINS_HEADER = "TYPE\tID\tPLATFORMS\tSTATUS\t\n"


def test_ctr_plugins_ls_table():
    # NewWriter(os.Stdout, 4, 8, 4, ' ', 0). Column widths are the widest
    # cell + 4: TYPE 28+4=32 (io.containerd.snapshotter.v1), ID 9+4=13,
    # PLATFORMS 11+4=15, STATUS 6+4=10. The trailing tab makes STATUS a
    # column too, so every line ends in padding.
    src = [
        PLUGINS_HEADER,
        "io.containerd.content.v1\tcontent\t-\tok\t\n",
        "io.containerd.snapshotter.v1\toverlayfs\tlinux/amd64\tok\t\n",
        "io.containerd.service.v1\tcontainers-service\t-\tok\t\n",
    ]
    expected = (
        "TYPE                            ID                    PLATFORMS      STATUS    \n"
        "io.containerd.content.v1        content               -              ok        \n"
        "io.containerd.snapshotter.v1    overlayfs             linux/amd64    ok        \n"
        "io.containerd.service.v1        containers-service    -              ok        \n"
    )
    assert render(src, 4, 8, 4) == expected


def test_ctr_plugins_ls_table_two_rows():
    src = [
        PLUGINS_HEADER,
        "io.containerd.content.v1\tcontent\t-\tok\t\n",
        "io.containerd.snapshotter.v1\toverlayfs\tlinux/amd64\tok\t\n",
    ]
    expected = (
        "TYPE                            ID           PLATFORMS      STATUS    \n"
        "io.containerd.content.v1        content      -              ok        \n"
        "io.containerd.snapshotter.v1    overlayfs    linux/amd64    ok        \n"
    )
    assert render(src, 4, 8, 4) == expected


def test_ctr_plugins_ls_header_only():
    # no plugins: the header alone; minwidth 4 does not bind (ID: 2+4=6)
    assert render(PLUGINS_HEADER, 4, 8, 4) == "TYPE    ID    PLATFORMS    STATUS    \n"


def test_ctr_plugins_ls_skip_and_error_status():
    src = [
        PLUGINS_HEADER,
        "io.containerd.snapshotter.v1\tbtrfs\tlinux/amd64\tskip\t\n",
        "io.containerd.snapshotter.v1\tzfs\tlinux/amd64\terror\t\n",
    ]
    expected = (
        "TYPE                            ID       PLATFORMS      STATUS    \n"
        "io.containerd.snapshotter.v1    btrfs    linux/amd64    skip      \n"
        "io.containerd.snapshotter.v1    zfs      linux/amd64    error     \n"
    )
    assert render(src, 4, 8, 4) == expected


def _detailed(plugins) -> str:
    """ctr plugins ls --detailed, statement by statement."""
    out = io.StringIO()
    w = new_writer(out, 4, 8, 4, " ", 0)
    first = True
    for p in plugins:
        if not first:
            fprintln(w, "\t\t\t")
        first = False
        fprintln(w, "Type:\t", p["type"])
        fprintln(w, "ID:\t", p["id"])
        if p.get("requires"):
            fprintln(w, "Requires:\t")
            for r in p["requires"]:
                fprintln(w, "\t", r)
        if p.get("platforms"):
            fprintln(w, "Platforms:\t", p["platforms"])
        if p.get("exports"):
            fprintln(w, "Exports:\t")
            for k, v in p["exports"].items():
                fprintln(w, "\t", k, "\t", v)
        if p.get("capabilities"):
            fprintln(w, "Capabilities:\t", ",".join(p["capabilities"]))
        if p.get("error"):
            code, message = p["error"]
            fprintln(w, "Error:\t")
            fprintln(w, "\t Code:\t", code)
            fprintln(w, "\t Message:\t", message)
    w.flush()
    return out.getvalue()


def test_ctr_plugins_detailed_requires():
    # Every line has a tab, so nothing flushes early and column 0 is one
    # block over the whole output: widest cell "Requires:" (9) + 4 = 13.
    # The separator line "\t\t\t" alone has columns 1 and 2 (width
    # max(0+4, minwidth 4) = 4 each) and its last (empty) cell is in none:
    # 13 + 4 + 4 = 21 spaces. The value cells start with the space that
    # Fprintln put between the operands.
    got = _detailed(
        [
            {"type": "io.containerd.content.v1", "id": "content"},
            {
                "type": "io.containerd.service.v1",
                "id": "containers-service",
                "requires": ["io.containerd.metadata.v1"],
            },
        ]
    )
    expected = (
        "Type:         io.containerd.content.v1\n"
        "ID:           content\n"
        "                     \n"
        "Type:         io.containerd.service.v1\n"
        "ID:           containers-service\n"
        "Requires:    \n"
        "              io.containerd.metadata.v1\n"
    )
    assert got == expected


def test_ctr_plugins_detailed_exports_and_error():
    # Column 0: "Capabilities:" (13) + 4 = 17. The export line
    # "\t root \t /var/..." has a column-1 cell " root " (6+4=10) in a block
    # of its own; the error lines " Code:" / " Message:" form another
    # column-1 block: " Message:" (9) + 4 = 13.
    got = _detailed(
        [
            {
                "type": "io.containerd.snapshotter.v1",
                "id": "overlayfs",
                "platforms": "linux/amd64",
                "exports": {"root": "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"},
                "capabilities": ["remap-ids", "only-remap-ids"],
            },
            {
                "type": "io.containerd.snapshotter.v1",
                "id": "zfs",
                "platforms": "linux/amd64",
                "error": ("Unknown", "skip plugin: zfs must be a zfs filesystem"),
            },
        ]
    )
    expected = (
        "Type:             io.containerd.snapshotter.v1\n"
        "ID:               overlayfs\n"
        "Platforms:        linux/amd64\n"
        "Exports:         \n"
        "                  root      /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs\n"
        "Capabilities:     remap-ids,only-remap-ids\n"
        "                         \n"
        "Type:             io.containerd.snapshotter.v1\n"
        "ID:               zfs\n"
        "Platforms:        linux/amd64\n"
        "Error:           \n"
        "                  Code:        Unknown\n"
        "                  Message:     skip plugin: zfs must be a zfs filesystem\n"
    )
    assert got == expected


def test_ctr_namespaces_ls():
    # NewWriter(os.Stdout, 1, 8, 1, ' ', 0): NAME 7+1=8, LABELS 7+1=8.
    out = io.StringIO()
    w = TabWriter(out, 1, 8, 1, " ", 0)
    fprintln(w, "NAME\tLABELS\t")
    for name, labels in [("default", ""), ("k8s.io", "foo=bar")]:
        w.write(f"{name}\t{labels}\t\n")
    w.flush()
    assert out.getvalue() == (
        "NAME    LABELS  \n"
        "default         \n"
        "k8s.io  foo=bar \n"
    )


def test_ctr_namespaces_ls_empty():
    assert render("NAME\tLABELS\t\n", 1, 8, 1) == "NAME LABELS \n"


# ---------------------------------------------------------------------------
# the rules one at a time


def test_tabless_line_ends_blocks_and_flushes():
    out = io.StringIO()
    w = TabWriter(out, 0, 8, 1, " ", 0)
    w.write("a\tb\nlonger\tc\n")
    assert out.getvalue() == ""  # still buffered: later lines may widen the column
    w.write("plain\n")  # a single cell: the writer flushes by itself
    assert out.getvalue() == "a      b\nlonger c\nplain\n"
    w.write("x\ty\n")
    w.flush()
    assert out.getvalue() == "a      b\nlonger c\nplain\nx y\n"


def test_tabless_line_separates_blocks_within_one_write():
    src = "aaaaaaaa\tb\nplain\nc\td\n"
    assert render(src, 0, 8, 1) == "aaaaaaaa b\nplain\nc d\n"


def test_formfeed_ends_block_and_prints_as_newline():
    src = "a\tb\fcccccc\td\n"
    assert render(src, 0, 8, 1) == "a b\ncccccc d\n"


def test_short_line_splits_inner_column_but_not_outer():
    # column 0 spans all three lines (bbbb: 4+1=5); column 1 has two
    # one-line blocks, because the second line's "bb" is its last cell (in
    # no column) and breaks the run: xxxxxx 6+1=7 above, x 1+1=2 below
    src = "a\txxxxxx\tc\nbbbb\tbb\nc\tx\td\n"
    expected = (
        "a    xxxxxx c\n"
        "bbbb bb\n"
        "c    x d\n"
    )
    assert render(src, 0, 8, 1) == expected


def test_unicode_width_counts_runes():
    src = "名前\tx\nab\ty\nçé\tz\n"
    assert render(src, 0, 8, 1) == "名前 x\nab y\nçé z\n"


def test_wide_and_combining_still_count_one_per_rune():
    # "e\u0301" is two runes, so it is as wide as "ab"
    assert render("e\u0301\t|\nabc\t|\n", 0, 8, 1) == "e\u0301  |\nabc |\n"


def test_empty_cells():
    src = "\tb\t\na\t\t\n\t\tc\n"
    expected = (
        "  b \n"  # col0 "" -> 2, col1 "b" -> 2
        "a   \n"
        "    c\n"
    )
    assert render(src, 0, 8, 1) == expected


def test_minwidth_larger_than_content():
    assert render("ab\tc\nd\te\n", 10, 8, 1) == "ab        c\nd         e\n"


def test_padding_zero_lets_cells_touch():
    assert render("abc\tdef\t\nx\ty\t\n", 0, 8, 0) == "abcdef\nx  y  \n"


def test_text_without_final_newline_is_written_on_flush():
    out = io.StringIO()
    w = TabWriter(out, 0, 8, 1)
    w.write("a\tb\nccc\td")
    assert out.getvalue() == ""
    w.flush()
    assert out.getvalue() == "a   b\nccc d"


def test_last_line_trailing_tab_without_newline():
    # "x\t" as the last line: its cell is the last one terminated, and the
    # (empty) text after it makes no cell, so the cell is in no column
    assert render("ab\t1\nx\t", 0, 8, 1) == "ab 1\nx"


def test_flush_twice_and_reuse():
    out = io.StringIO()
    w = TabWriter(out, 0, 8, 1)
    w.write("aaaa\tb\n")
    w.flush()
    w.flush()
    w.write("c\td\n")
    w.flush()
    assert out.getvalue() == "aaaa b\nc d\n"


@pytest.mark.parametrize("how", ["whole", "single", "growing"])
def test_chunking_does_not_matter(how):
    src = "TYPE\tID\t\nio.containerd.content.v1\tcontent\t\nx\ty\t\n"
    expected = (
        "TYPE                        ID         \n"
        "io.containerd.content.v1    content    \n"
        "x                           y          \n"
    )
    assert render(pieces(src, how), 4, 8, 4) == expected


def test_bytes_input_split_inside_a_character():
    data = "本\tb\nxx\tc\n".encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert render(chunks, 0, 8, 1) == "本  b\nxx c\n"


def test_bad_arguments():
    with pytest.raises(ValueError):
        TabWriter(io.StringIO(), -1, 8, 1)
    with pytest.raises(ValueError):
        TabWriter(io.StringIO(), 0, 8, 1, "ab")


def test_write_returns_length_and_go_aliases():
    out = io.StringIO()
    w = TabWriter(out, 0, 8, 1)
    assert w.Write("a\tb\n") == 4
    w.Flush()
    assert out.getvalue() == "a b\n"


# ---------------------------------------------------------------------------
# fprintln


def test_fprintln_spacing():
    out = io.StringIO()
    assert fprintln(out, "Type:\t", "io.containerd.content.v1") == 32
    fprintln(out, "\t", "k", "\t", "v")
    fprintln(out)
    fprintln(out, "only")
    fprintln(out, "n:", 3, True, None, ["a", "b"])
    assert out.getvalue() == (
        "Type:\t io.containerd.content.v1\n"
        "\t k \t v\n"
        "\n"
        "only\n"
        "n: 3 true <nil> [a b]\n"
    )


def test_go_sprint_value():
    assert go_sprint_value(False) == "false"
    assert go_sprint_value(("x", 1)) == "[x 1]"
    assert go_sprint_value("s") == "s"


# ---------------------------------------------------------------------------
# Facts from Go's text/tabwriter test-suite: (minwidth, tabwidth, padding,
# padchar, flags, input, output). Byte strings use 0xff, Go's Escape.

GO_FACTS = [
    ("empty", 8, 0, 1, ".", 0, "", ""),
    ("empty debug", 8, 0, 1, ".", DEBUG, "", ""),
    ("newlines only", 8, 0, 1, ".", 0, "\n\n\n", "\n\n\n"),
    ("no tabs", 8, 0, 1, ".", 0, "a\nb\nc", "a\nb\nc"),
    ("lone tab", 8, 0, 1, ".", 0, "\t", ""),
    ("lone tab right", 8, 0, 1, ".", ALIGN_RIGHT, "\t", ""),
    ("star tab star", 8, 0, 1, ".", 0, "*\t*", "*.......*"),
    ("star tab star nl", 8, 0, 1, ".", 0, "*\t*\n", "*.......*\n"),
    ("star tab star tab", 8, 0, 1, ".", 0, "*\t*\t", "*.......*"),
    ("star tab star tab debug", 8, 0, 1, ".", DEBUG, "*\t*\t", "*.......|*"),
    ("star tab star tab right", 8, 0, 1, ".", ALIGN_RIGHT, "*\t*\t", ".......**"),
    ("tab nl", 8, 0, 1, ".", 0, "\t\n", "........\n"),
    ("plain", 8, 0, 1, ".", 0, "a) foo", "a) foo"),
    ("space pad", 8, 0, 1, " ", 0, "b) foo\tbar", "b) foo  bar"),
    ("trailing tab", 8, 0, 1, ".", 0, "c) foo\tbar\t", "c) foo..bar"),
    ("nl", 8, 0, 1, ".", 0, "d) foo\tbar\n", "d) foo..bar\n"),
    ("trailing tab nl", 8, 0, 1, ".", 0, "e) foo\tbar\t\n", "e) foo..bar.....\n"),
    (
        "html",
        8, 0, 1, ".", FILTER_HTML,
        "f) f&lt;o\t<b>bar</b>\t\n",
        "f) f&lt;o..<b>bar</b>.....\n",
    ),
    (
        "html unterminated entity",
        8, 0, 1, ".", FILTER_HTML,
        "g) f&lt;o\t<b>bar</b>\t non-terminated entity &amp",
        "g) f&lt;o..<b>bar</b>..... non-terminated entity &amp",
    ),
    (
        "html debug",
        8, 0, 1, ".", FILTER_HTML | DEBUG,
        "g) f&lt;o\t<b>bar</b>\t non-terminated entity &amp",
        "g) f&lt;o..|<b>bar</b>.....| non-terminated entity &amp",
    ),
    ("no tab padchar", 8, 0, 1, "*", 0, "Hello, world!\n", "Hello, world!\n"),
    (
        "minwidth 1 padding 0",
        1, 0, 0, ".", 0,
        "1\t2\t3\t4\n11\t222\t3333\t44444\n",
        "1.2..3...4\n11222333344444\n",
    ),
    (
        "formfeed inside html is text",
        1, 0, 0, ".", FILTER_HTML,
        "1\t2<!---\f--->\t3\t4\n11\t222\t3333\t44444\n",
        "1.2<!---\f--->..3...4\n11222333344444\n",
    ),
    (
        "formfeed flushes",
        1, 0, 0, ".", 0,
        "1\t2\t3\t4\f11\t222\t3333\t44444\n",
        "1234\n11222333344444\n",
    ),
    (
        "formfeed debug",
        1, 0, 0, ".", DEBUG,
        "1\t2\t3\t4\f11\t222\t3333\t44444\n",
        "1|2|3|4\n---\n11|222|3333|44444\n",
    ),
    ("minwidth 5", 5, 0, 0, ".", 0, "1\t2\t3\t4\n", "1....2....3....4\n"),
    ("minwidth 5 trailing", 5, 0, 0, ".", 0, "1\t2\t3\t4\t\n", "1....2....3....4....\n"),
    (
        "runes",
        8, 0, 1, ".", 0,
        "本\tb\tc\naa\t本本本\tcccc\tddddd\naaa\tbbbb\n",
        "本.......b.......c\naa......本本本.....cccc....ddddd\naaa.....bbbb\n",
    ),
    (
        "align right",
        8, 0, 1, " ", ALIGN_RIGHT,
        "a\tè\tc\t\naa\tèèè\tcccc\tddddd\t\naaa\tèèèè\t\n",
        "       a       è       c\n      aa     èèè    cccc   ddddd\n     aaa    èèèè\n",
    ),
    (
        "minwidth 2",
        2, 0, 0, " ", 0,
        "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n",
        "a  b  c\naa bbbcccc\naaabbbb\n",
    ),
    (
        "underscore",
        8, 0, 1, "_", 0,
        "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n",
        "a_______b_______c\naa______bbb_____cccc\naaa_____bbbb\n",
    ),
    (
        "nested blocks",
        4, 0, 1, "-", 0,
        "4444\t日本語\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n",
        "4444------日本語-22--1---333\n999999999-22\n7---------22\n"
        "------------------88888888\n\n"
        "666666-666666-666666----4444\n1------1------999999999-0000000000\n",
    ),
    (
        "nested blocks padding 3",
        4, 0, 3, ".", 0,
        "4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n",
        "4444........333...22...1...333\n999999999...22\n7...........22\n"
        "....................88888888\n\n"
        "666666...666666...666666......4444\n1........1........999999999...0000000000\n",
    ),
    (
        "tab padding with html",
        8, 8, 1, "\t", FILTER_HTML,
        "4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n"
        "1\t1\t<font color=red attr=日本語>999999999</font>\t0000000000\n",
        "4444\t\t333\t22\t1\t333\n999999999\t22\n7\t\t22\n\t\t\t\t88888888\n\n"
        "666666\t666666\t666666\t\t4444\n"
        "1\t1\t<font color=red attr=日本語>999999999</font>\t0000000000\n",
    ),
    (
        "numbers right aligned",
        1, 0, 2, " ", ALIGN_RIGHT,
        ".0\t.3\t2.4\t-5.1\t\n23.0\t12345678.9\t2.4\t-989.4\t\n5.1\t12.0\t2.4\t-7.0\t\n"
        ".0\t0.0\t332.0\t8908.0\t\n.0\t-.3\t456.4\t22.1\t\n.0\t1.2\t44.4\t-13.3\t\t",
        "    .0          .3    2.4    -5.1\n  23.0  12345678.9    2.4  -989.4\n"
        "   5.1        12.0    2.4    -7.0\n    .0         0.0  332.0  8908.0\n"
        "    .0         -.3  456.4    22.1\n    .0         1.2   44.4   -13.3",
    ),
    (
        "numbers right aligned debug",
        1, 0, 2, " ", ALIGN_RIGHT | DEBUG,
        ".0\t.3\t2.4\t-5.1\t\n23.0\t12345678.9\t2.4\t-989.4\t\n5.1\t12.0\t2.4\t-7.0\t\n"
        ".0\t0.0\t332.0\t8908.0\t\n.0\t-.3\t456.4\t22.1\t\n.0\t1.2\t44.4\t-13.3\t\t",
        "    .0|          .3|    2.4|    -5.1|\n  23.0|  12345678.9|    2.4|  -989.4|\n"
        "   5.1|        12.0|    2.4|    -7.0|\n    .0|         0.0|  332.0|  8908.0|\n"
        "    .0|         -.3|  456.4|    22.1|\n    .0|         1.2|   44.4|   -13.3|",
    ),
    ("empty column", 4, 0, 0, ".", 0, "a\t\tb", "a.......b"),
    ("hard tabs not discarded", 4, 0, 0, ".", DISCARD_EMPTY_COLUMNS, "a\t\tb", "a.......b"),
    ("soft tabs discarded", 4, 0, 0, ".", DISCARD_EMPTY_COLUMNS, "a\v\vb", "a...b"),
    (
        "soft tabs discarded right",
        4, 0, 0, ".", ALIGN_RIGHT | DISCARD_EMPTY_COLUMNS,
        "a\v\vb",
        "...ab",
    ),
    (
        "tab padding",
        100, 100, 0, "\t", 0,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "tab padding discard",
        100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS,
        "a\vb\v\vd\na\vb\v\vd\ve\na\na\vb\vc\vd\na\vb\vc\vd\ve\n",
        "a\tb\td\na\tb\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "tab padding discard debug",
        100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS | DEBUG,
        "a\vb\v\vd\na\vb\v\vd\ve\na\na\vb\vc\vd\na\vb\vc\vd\ve\n",
        "a\t|b\t||d\na\t|b\t||d\t|e\na\na\t|b\t|c\t|d\na\t|b\t|c\t|d\t|e\n",
    ),
    (
        "tab padding hard tabs kept",
        100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "tab padding hard tabs kept debug",
        100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS | DEBUG,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\t|b\t|\t|d\na\t|b\t|\t|d\t|e\na\na\t|b\t|c\t|d\na\t|b\t|c\t|d\t|e\n",
    ),
    # Escape handling (Go's Escape is the byte 0xff)
    ("esc stripped empty", 8, 0, 1, ".", STRIP_ESCAPE, b"\xff\xff", b""),
    ("esc empty", 8, 0, 1, ".", 0, b"\xff\xff", b"\xff\xff"),
    ("esc stripped tab", 8, 0, 1, ".", STRIP_ESCAPE, b"\xff\t\xff", b"\t"),
    ("esc tab", 8, 0, 1, ".", 0, b"\xff\t\xff", b"\xff\t\xff"),
    (
        "esc stripped text",
        8, 0, 1, ".", STRIP_ESCAPE,
        b'\xff"foo\t\n\tbar"\xff',
        b'"foo\t\n\tbar"',
    ),
    ("esc text", 8, 0, 1, ".", 0, b'\xff"foo\t\n\tbar"\xff', b'\xff"foo\t\n\tbar"\xff'),
    ("esc stripped unterminated", 8, 0, 1, ".", STRIP_ESCAPE, b"abc\xff\tdef", b"abc\tdef"),
    ("esc unterminated", 8, 0, 1, ".", 0, b"abc\xff\tdef", b"abc\xff\tdef"),
]


@pytest.mark.parametrize("how", ["whole", "single", "growing"])
@pytest.mark.parametrize(
    "name,minwidth,tabwidth,padding,padchar,flags,src,expected",
    GO_FACTS,
    ids=[f[0] for f in GO_FACTS],
)
def test_go_facts(name, minwidth, tabwidth, padding, padchar, flags, src, expected, how):
    if isinstance(expected, bytes):
        expected = expected.decode("utf-8", "surrogateescape")
    got = render(pieces(src, how), minwidth, tabwidth, padding, padchar, flags)
    assert got == expected


def test_escape_in_str_input():
    # the str spelling of Go's Escape: the escaped "a<TAB>b" is one cell
    # of width 3 (the tab is text), so column 0 is 7+1 wide
    got = render(f"{ESCAPE}a\tb{ESCAPE}\tc\nxxxxxxx\td\n", 0, 8, 1, " ", STRIP_ESCAPE)
    assert got == "a\tb     c\nxxxxxxx d\n"


def test_y_diaeresis_is_plain_text():
    # U+00FF is a normal character (in Go it is two bytes, neither 0xff)
    assert render("ÿ\tx\nab\ty\n", 0, 8, 1) == "ÿ  x\nab y\n"


def test_tab_indent():
    # leading empty cells are padded with tabs even though padchar is ' '
    got = render("\tx\t\n\t\tyy\n", 0, 4, 1, " ", TAB_INDENT)
    # column 0 is empty in both lines: width 0+1 -> one tab; column 1 ("x"
    # and the empty cell of line 2) width 2, a space after "x" but a tab for
    # the leading empty cell of line 2
    assert got == "\tx \n\t\tyy\n"


# ---------------------------------------------------------------------------
# A second opinion: for flags=0 the recursive formatter must agree with the
# plain statement of the rule. Cell c of a line is padded to the width of the
# maximal run of adjacent lines that all have a tab-terminated cell c.


def _reference(text: str, minwidth: int, padding: int, padchar: str) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    if len(lines[-1]) > 1 and lines[-1][-1] == "":
        # unterminated last line ending in a tab: no empty cell follows the
        # tab, so the cell before it is the line's last (Go fact "*\t*\t")
        lines[-1].pop()

    def width(i: int, c: int) -> int:
        lo = i
        while lo > 0 and len(lines[lo - 1]) - 1 > c:
            lo -= 1
        hi = i
        while hi + 1 < len(lines) and len(lines[hi + 1]) - 1 > c:
            hi += 1
        return max([minwidth] + [len(lines[k][c]) + padding for k in range(lo, hi + 1)])

    out = []
    for i, cells in enumerate(lines):
        row = "".join(
            cell + padchar * (width(i, c) - len(cell)) for c, cell in enumerate(cells[:-1])
        )
        out.append(row + cells[-1])
    return "\n".join(out)


def test_random_tables_agree_with_reference():
    import random

    rng = random.Random(20240611)
    alphabet = ["a", "bb", "本", "", "xyz", "é"]
    for _ in range(400):
        nlines = rng.randint(0, 8)
        text = "\n".join(
            "\t".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
            for _ in range(nlines)
        )
        if rng.random() < 0.5:
            text += "\n"
        minwidth, padding = rng.randint(0, 6), rng.randint(0, 3)
        for how in ("whole", "single"):
            got = render(pieces(text, how), minwidth, 8, padding, ".")
            assert got == _reference(text, minwidth, padding, "."), (text, minwidth, padding)


def test_very_many_columns():
    # one nesting level per column: deeper than Python's recursion limit
    n = 3000
    row = "x\t" * n + "\n"
    got = render(row + row, 0, 8, 1, ".")
    assert got == ("x." * n + "\n") * 2


def test_ctr_plugins_detailed_as_printed_by_real_ctr():
    # Recorded from the real `ctr plugins ls -d` (containerd 1.6.20, Go
    # 1.19.8) against a daemon rooted in /tmp/twcheck, cut down to three
    # plugins (column 0 is 14 wide either way: "Platforms:" + 4). The blank
    # separator lines differ in length because the "\t\t\t" line joins the
    # column-1 block of its neighbours: 14+10+4 after the export line
    # (" root " 6+4), 14+13+4 after the error lines (" Message:" 9+4), and
    # 14+4+4 where no neighbour has a column 1.
    got = _detailed(
        [
            {
                "type": "io.containerd.content.v1",
                "id": "content",
                "exports": {"root": "/tmp/twcheck/root/io.containerd.content.v1.content"},
            },
            {
                "type": "io.containerd.snapshotter.v1",
                "id": "aufs",
                "platforms": "linux/amd64",
                "exports": {"root": "/tmp/twcheck/root/io.containerd.snapshotter.v1.aufs"},
                "error": (
                    "Unknown",
                    'aufs is not supported (modprobe aufs failed: exec: "modprobe": '
                    'executable file not found in $PATH ""): skip plugin',
                ),
            },
            {"type": "io.containerd.snapshotter.v1", "id": "native", "platforms": "linux/amd64"},
            {"type": "io.containerd.snapshotter.v1", "id": "overlayfs", "platforms": "linux/amd64"},
        ]
    )
    expected = (
        "Type:          io.containerd.content.v1\n"
        "ID:            content\n"
        "Exports:      \n"
        "               root      /tmp/twcheck/root/io.containerd.content.v1.content\n"
        "                            \n"
        "Type:          io.containerd.snapshotter.v1\n"
        "ID:            aufs\n"
        "Platforms:     linux/amd64\n"
        "Exports:      \n"
        "               root      /tmp/twcheck/root/io.containerd.snapshotter.v1.aufs\n"
        "Error:        \n"
        "               Code:        Unknown\n"
        '               Message:     aufs is not supported (modprobe aufs failed: exec: "modprobe": '
        'executable file not found in $PATH ""): skip plugin\n'
        "                               \n"
        "Type:          io.containerd.snapshotter.v1\n"
        "ID:            native\n"
        "Platforms:     linux/amd64\n"
        "                      \n"
        "Type:          io.containerd.snapshotter.v1\n"
        "ID:            overlayfs\n"
        "Platforms:     linux/amd64\n"
    )
    assert got == expected


def test_ctr_leases_ls_label_with_a_tab_and_wide_runes():
    # Recorded from the real `ctr leases ls` (NewWriter(os.Stdout, 1, 8, 1,
    # ' ', 0), rows "%v\t%v\t%s\t\n"): a label value holding a tab adds a
    # cell, and widths count runes, not bytes.
    out = io.StringIO()
    w = TabWriter(out, 1, 8, 1, " ", 0)
    fprintln(w, "ID\tCREATED AT\tLABELS\t")
    for lease_id, labels in [("l1", "k=İstanbul"), ("l10", "k=μ"), ("l20", "k=tab\tx"), ("l28", "-")]:
        w.write(f"{lease_id}\t2026-11-27T16:42:48Z\t{labels}\t\n")
    w.flush()
    assert out.getvalue() == (
        "ID  CREATED AT           LABELS     \n"
        "l1  2026-11-27T16:42:48Z k=İstanbul \n"
        "l10 2026-11-27T16:42:48Z k=μ        \n"
        "l20 2026-11-27T16:42:48Z k=tab      x \n"
        "l28 2026-11-27T16:42:48Z -          \n"
    )
