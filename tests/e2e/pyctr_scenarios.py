"""Every pyctr command, with and without its optional flags, run side by
side with the real ctr against one daemon: same exit code, same stdout,
same error line (`ctr: ...` / `pyctr: ...`).

A command that changes state runs twice: ctr in namespace `via-ctr`, pyctr
in namespace `via-py`, each on its own copy of the same objects, and the
two results are compared with the namespace name folded to `{ns}`. A
command that only reads runs with both tools against the same objects, so
even times and sizes must agree. What a daemon makes up differently for
each copy (snapshot ids inside mount paths, timestamps, generated lease
ids, ages) is masked where it is compared across namespaces; nothing is
masked when both tools read the same objects, except the order of labels
ctr prints in Go map order.

The scenarios are daemon-agnostic: test_e2e_containerd.py runs them
against a real containerd, test_e2e_pyctr_parity.py against pycontainerd.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from typing import Callable

from e2e_support import CTR, PYCTR, _run, plugin_rows, run_ctr, run_pyctr

NAMESPACES = {"ctr": "via-ctr", "pyctr": "via-py"}
Normalize = Callable[[bytes], bytes]


@dataclass
class Outcome:
    rc: int
    out: bytes
    err: bytes

    def comparable(self, tool: str, normalize: Normalize) -> tuple[int, bytes, bytes]:
        # ctr and pyctr name themselves in error lines; logrus adds a time
        err = re.sub(rb"(?m)^" + tool.encode() + rb": ", b"CLI: ", self.err)
        err = re.sub(rb'time="[^"]*" ', b"", err)
        return self.rc, normalize(self.out), normalize(err)


def _identity(data: bytes) -> bytes:
    return data


class SideBySide:
    """ctr and pyctr against one daemon."""

    def __init__(self, address: str):
        self.address = address

    def run(self, tool: str, *args: str, ns: str, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> Outcome:
        binary = CTR if tool == "ctr" else PYCTR
        proc: subprocess.CompletedProcess = _run([binary, "--address", self.address, "--namespace", ns, *args],
                                                 check=False, env=env, input=stdin or b"")
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    def same(self, *args: str, ns: str = NAMESPACES["pyctr"], normalize: Normalize = _identity,
             rc: int = 0, **kwargs) -> Outcome:
        """A reading command: both tools, the same namespace, the same answer."""
        want = self.run("ctr", *args, ns=ns, **kwargs)
        got = self.run("pyctr", *args, ns=ns, **kwargs)
        _assert_alike(args, want.comparable("ctr", normalize), got.comparable("pyctr", normalize))
        assert got.rc == rc, (args, got)
        return got

    def each(self, *args: str, normalize: Normalize = _identity, rc: int = 0, **kwargs) -> Outcome:
        """A changing command: ctr in its namespace, pyctr in its own;
        `{ns}` in an argument stands for the namespace's name."""
        raw, seen = {}, {}
        for tool, ns in NAMESPACES.items():
            raw[tool] = self.run(tool, *[a.replace("{ns}", ns) for a in args], ns=ns, **kwargs)
            fold = _fold(ns)
            seen[tool] = raw[tool].comparable(tool, lambda b, fold=fold: normalize(fold(b)))
        _assert_alike(args, seen["ctr"], seen["pyctr"])
        assert raw["pyctr"].rc == rc, (args, raw["pyctr"])
        return raw["pyctr"]

    def both_namespaces_read_alike(self, *args: str, normalize: Normalize = _identity) -> None:
        """What ctr built and what pyctr built read the same, through ctr."""
        by_ctr, by_pyctr = (self.run("ctr", *args, ns=ns) for ns in NAMESPACES.values())
        assert normalize(by_ctr.out) == normalize(by_pyctr.out), (args, by_ctr, by_pyctr)
        assert by_ctr.rc == by_pyctr.rc == 0, (args, by_ctr, by_pyctr)


def _fold(ns: str) -> Normalize:
    """The namespace's name to `{ns}`; a snapshotter's internal key
    `<ns>/<n>/<key>` (quoted in errors) to `{ns}/N/<key>`."""
    return lambda b: re.sub(rb"\{ns\}/\d+/", b"{ns}/N/", b.replace(ns.encode(), b"{ns}"))


def _assert_alike(args: tuple[str, ...], want: tuple[int, bytes, bytes], got: tuple[int, bytes, bytes]) -> None:
    assert got == want, (
        f"{' '.join(args)}\n ctr: rc={want[0]}\n{want[1].decode(errors='replace')}{want[2].decode(errors='replace')}"
        f"\n pyctr: rc={got[0]}\n{got[1].decode(errors='replace')}{got[2].decode(errors='replace')}"
    )


# -- masks ------------------------------------------------------------------------------

def chain(*fns: Normalize) -> Normalize:
    def run(data: bytes) -> bytes:
        for fn in fns:
            data = fn(data)
        return data
    return run


def mask_snapshot_ids(data: bytes) -> bytes:
    """Each daemon numbers its snapshots (paths `.../snapshots/<n>/...`);
    the two namespaces' copies get different numbers."""
    return re.sub(rb"/snapshots/\d+", b"/snapshots/N", data)


def mask_times(data: bytes) -> bytes:
    """RFC 3339 times (with or without fraction or zone)."""
    return re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", b"TIME", data)


def sort_labels(data: bytes) -> bytes:
    """ctr prints some label lists in Go map order: sort each `k=v,k=v` run."""
    def fix(m: re.Match) -> bytes:
        return b",".join(sorted(m.group(0).split(b",")))
    return re.sub(rb"[^\s,=]+=[^\s,]*(,[^\s,=]+=[^\s,]*)+", fix, data)


def sort_rows(data: bytes) -> bytes:
    """Rows a daemon lists in Go map order (containerd's ListStatuses): the
    header first, the rows sorted."""
    head, _, rest = data.partition(b"\n")
    return head + _ + b"".join(sorted(rest.splitlines(keepends=True)))


def mask_age(data: bytes) -> bytes:
    """go-units' HumanDuration ages, which tick while the tools run (and
    so change the table's padding)."""
    return squeeze_spaces(re.sub(rb"Less than a second|About a minute|\d+ seconds?|\d+ minutes", b"AGE", data))


def mask_lease_ids(data: bytes) -> bytes:
    """Generated lease ids (`<nanoseconds>-<4 base64 characters>`, as
    containerd's leases.WithRandomID), different each time."""
    return re.sub(rb"(?m)^\d{1,9}-[\w-]{4}(?=\s|$)", b"LEASE", data)


def squeeze_spaces(data: bytes) -> bytes:
    """Table padding, which follows the widest cell: after a mask, the
    masked cells' widths no longer count."""
    return re.sub(rb"[ \t]+", b" ", data)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def warm_up(pair: SideBySide) -> None:
    """Let the daemon's first garbage collection pass before the scenario:
    a synchronous lease delete waits for one. Afterwards a collection only
    follows a deletion, so the scenarios label what must outlive one."""
    pair.run("ctr", "leases", "create", "--id", "warm-up", ns="default")
    pair.run("ctr", "leases", "rm", "--sync", "warm-up", ns="default")


# -- the scenarios -------------------------------------------------------------------------

GC_ROOT = "containerd.io/gc.root=keep"


def version(pair: SideBySide) -> None:
    want = pair.run("ctr", "version", ns="default")
    got = pair.run("pyctr", "version", ns="default")
    assert got.rc == want.rc == 0
    assert got.out.split(b"Server:")[1] == want.out.split(b"Server:")[1]


def content(pair: SideBySide) -> None:
    warm_up(pair)
    blobs = [b"hello parity\n", b"second blob, a little longer\n" * 40, b"third\n"]
    d = [sha256(b) for b in blobs]
    # ingest: no flags, the expected digest, digest and size
    pair.each("content", "ingest", "plain", stdin=blobs[0])
    pair.each("content", "ingest", "--expected-digest", d[1], "with-digest", stdin=blobs[1])
    pair.each("content", "ingest", "--expected-size", str(len(blobs[2])), "--expected-digest", d[2], "sized",
              stdin=blobs[2])
    for dg in d:  # before anything is deleted: a deletion lets the collector run
        pair.each("content", "label", dg, GC_ROOT)
    # ingest's failures
    pair.each("content", "ingest", stdin=blobs[0], rc=1)  # no reference
    pair.each("content", "ingest", "--expected-digest", "sha256:abc", "bad-digest", stdin=blobs[0], rc=1)
    pair.each("content", "ingest", "--expected-digest", sha256(b"other"), "wrong-digest", stdin=blobs[0], rc=1)
    pair.each("content", "ingest", "--expected-digest", d[1], "known", stdin=b"")  # already there: not read
    pair.each("content", "ingest", "--expected-size", "99", "short", stdin=blobs[2], rc=1)  # stays active

    pair.same("content", "ls", normalize=chain(mask_age, sort_labels))
    pair.same("content", "ls", "-q")
    pair.same("content", "ls", "--quiet", f"digest=={d[1]}")
    pair.same("content", "list", f"size=={len(blobs[2])}", normalize=chain(mask_age, sort_labels))
    pair.same("content", "ls", "size>100", rc=1)  # not a filter: the header, then the error
    pair.both_namespaces_read_alike("content", "ls", normalize=chain(mask_age, sort_labels))

    active = chain(mask_age, sort_rows)
    pair.same("content", "active", normalize=active)
    pair.same("content", "active", "short", normalize=active)
    pair.same("content", "active", "--timeout", "5s", "nomatch", normalize=active)
    pair.same("content", "active", "-t", "5s", "--root", "/nonexistent", normalize=active)
    pair.both_namespaces_read_alike("content", "active", normalize=active)

    for dg in d:
        pair.same("content", "get", dg)
    pair.same("content", "get", sha256(b"never stored"), rc=1)
    pair.same("content", "get", "not-a-digest", rc=1)
    pair.same("content", "get", rc=1)

    pair.each("content", "label", d[0], "a=b", "team=x", normalize=sort_labels)
    pair.each("content", "label", d[0], normalize=sort_labels)  # just prints them
    pair.each("content", "label", d[0], "a=", normalize=sort_labels)  # removes one
    pair.each("content", "label", sha256(b"never stored"), "a=b", rc=1)
    pair.each("content", "label", rc=1)
    pair.same("content", "ls", normalize=chain(mask_age, sort_labels))

    pair.each("content", "rm", d[0])
    pair.each("content", "delete", d[1], sha256(b"never stored"))  # a missing one is no error
    pair.each("content", "del", "not-a-digest", d[2], rc=1)
    pair.each("content", "rm")
    pair.same("content", "ls", normalize=mask_age)


def leases(pair: SideBySide) -> None:
    pair.each("leases", "create", "--id", "plain")
    pair.each("leases", "create", "--id", "forever", "--expires", "0", "team=a", "a=b")
    pair.each("leases", "create", "-x", "1h30m", "--id", "short", "x=y")
    pair.each("leases", "create", normalize=mask_lease_ids)  # a generated id
    pair.each("leases", "create", "--id", "plain", rc=1)  # already exists

    listing = chain(mask_lease_ids, mask_times, squeeze_spaces)
    pair.same("leases", "ls", normalize=mask_lease_ids)
    pair.same("leases", "list", "-q", normalize=mask_lease_ids)
    pair.same("leases", "ls", "--quiet", "id==forever")
    pair.same("leases", "ls", "labels.team==a", "id==short")
    pair.both_namespaces_read_alike("leases", "ls", normalize=listing)

    pair.each("leases", "rm", "plain")
    pair.each("leases", "delete", "--sync", "forever", "short")
    pair.each("leases", "rm", "nope", rc=1)
    pair.same("leases", "ls", "-q", normalize=mask_lease_ids)


def namespaces(pair: SideBySide) -> None:
    """Namespaces are the one global object: ctr's and pyctr's copies are
    named `via-ctr-*` and `via-py-*` and listed together."""
    pair.each("namespaces", "create", "{ns}-dev", "a=b", "team=platform")
    pair.each("ns", "c", "{ns}-plain")
    pair.each("namespace", "create", "{ns}-dev", rc=1)  # already exists
    pair.each("namespaces", "create", "--", "-{ns}", rc=1)  # not an identifier
    pair.each("namespaces", "create", rc=1)
    pair.each("namespaces", "label", "{ns}-plain", "x=1", "y=2")
    pair.each("namespaces", "label", "{ns}-dev", "a=")
    pair.each("namespaces", "label", rc=1)
    pair.same("namespaces", "ls")
    pair.same("namespaces", "list", "-q")
    pair.same("ns", "ls", "--quiet")
    pair.each("namespaces", "rm", "{ns}-dev")
    pair.each("namespaces", "remove", "-c", "{ns}-plain", "{ns}-missing")
    pair.each("namespaces", "rm")
    pair.same("namespaces", "ls")


def snapshots(pair: SideBySide) -> None:
    """Default snapshotter (no flag), --snapshotter, $CONTAINERD_SNAPSHOTTER."""
    warm_up(pair)
    ids = chain(mask_snapshot_ids, mask_times)
    target = "/mnt/target"  # only printed in mount commands, never mounted
    # prepare: no flags, -t, --mounts, a parent
    pair.each("snapshots", "prepare", "k1")
    pair.each("snapshots", "prepare", "-t", target, "k2", normalize=ids)
    pair.each("snapshots", "prepare", "--mounts", "k3", normalize=ids)
    pair.each("snapshot", "mounts", target, "k1", normalize=ids)
    pair.each("snapshots", "m", target, "k2", normalize=ids)
    pair.each("snapshots", "commit", "c1", "k1")
    pair.each("snapshots", "prepare", "--target", target, "--mounts", "k4", "c1", normalize=ids)
    pair.each("snapshots", "view", "v1", "c1")
    pair.each("snapshots", "view", "-t", target, "v2", "c1", normalize=ids)
    pair.each("snapshots", "view", "--mounts", "v3", "c1", normalize=ids)
    for view in ("v1", "v2", "v3"):  # views carry no gc.root: keep them past the deletions below
        pair.each("snapshots", "label", view, GC_ROOT, normalize=sort_labels)
    pair.each("snapshots", "--snapshotter", "native", "prepare", "n1")
    pair.each("snapshots", "prepare", "n2", env={"CONTAINERD_SNAPSHOTTER": "native"})
    # failures
    pair.each("snapshots", "prepare", "k2", rc=1)  # already exists
    pair.each("snapshots", "commit", "c2", "v1", rc=1)  # not active
    pair.each("snapshots", "prepare", "k9", "no-parent", rc=1)
    pair.each("snapshots", "--snapshotter", "nope", "ls", rc=1)

    # reading the same snapshots: every byte agrees
    for sn in ((), ("--snapshotter", "native")):
        pair.same("snapshots", *sn, "ls")
        pair.same("snapshots", *sn, "tree")
        pair.same("snapshots", *sn, "usage")
    pair.same("snapshots", "--snapshotter", "overlayfs", "list")
    pair.same("snapshots", "usage", "-b")
    pair.same("snapshots", "ls", env={"CONTAINERD_SNAPSHOTTER": "native"})
    pair.same("snapshots", "usage", "k4", "c1")
    pair.same("snapshots", "usage", "-b", "c1")
    pair.same("snapshots", "usage", "nope", rc=1)
    for key in ("c1", "k4", "v1"):
        pair.same("snapshots", "info", key)
    pair.same("snapshots", "info", "nope", rc=1)
    pair.same("snapshots", "mounts", target, "k4")
    pair.same("snapshots", "mounts", target, "nope", rc=1)
    pair.both_namespaces_read_alike("snapshots", "ls")
    pair.both_namespaces_read_alike("snapshots", "tree")
    pair.both_namespaces_read_alike("snapshots", "info", "k4", normalize=ids)

    # labels: add, show, remove
    pair.each("snapshots", "label", "c1", "a=b", "team=x", normalize=chain(mask_times, sort_labels))
    pair.each("snapshots", "label", "c1", normalize=chain(mask_times, sort_labels))
    pair.each("snapshots", "label", "c1", "a=", normalize=chain(mask_times, sort_labels))
    pair.each("snapshots", "label", "nope", "a=b", rc=1)
    pair.same("snapshots", "info", "c1")

    # diff: the layer between a snapshot and its parent, or two snapshots
    pair.same("snapshots", "diff", "k4")
    pair.same("snapshots", "diff", "k4", "c1")
    pair.same("snapshots", "diff", "--media-type", "application/vnd.oci.image.layer.v1.tar", "k4")
    pair.same("snapshots", "diff", "v1", rc=1)  # a view: not something to diff against its parent
    pair.each("snapshots", "diff", "--keep", "--ref", "kept-{ns}", "--label", "x=y", "k2")
    pair.same("snapshots", "diff", "nope", rc=1)

    # removal
    pair.each("snapshots", "rm", "c1", rc=1)  # has children
    pair.each("snapshots", "rm", "k4", "v1")
    pair.each("snapshots", "delete", "nope", rc=1)
    pair.each("snapshots", "remove", "v2", "v3", "c1")
    pair.each("snapshots", "--snapshotter", "native", "del", "n1", "n2")
    pair.same("snapshots", "ls")
    pair.same("snapshots", "tree")


SCENARIOS = {fn.__name__: fn for fn in (version, content, leases, namespaces, snapshots)}


# -- plugins ls --tree ----------------------------------------------------------------------

_DRAWN = re.compile(r"(?P<uri>io\.containerd\.\S+) \((ok|skip|error)\)( \[no plugin for: [^]]+\])?")
_BACK = re.compile(r"(?P<type>io\.containerd\.[a-z0-9]+\.v\d+)\.(\{(?P<ids>[^}]+)\}|(?P<id>\S+)) \(see above\)")


def check_tree(address: str) -> list[str]:
    """`pyctr plugins ls --tree` against a live daemon: every plugin ctr
    lists is drawn exactly once; every other place a plugin belongs (under
    each plugin of a type it requires) refers back to it on a line below
    where it was drawn; no requirement is left out or made up. Returns the
    lines."""
    lines = run_pyctr(address, "plugins", "ls", "--tree").stdout.decode().splitlines()
    rows = json.loads(run_pyctr(address, "plugins", "ls", "--format", "json").stdout)
    listed = {f"{t}.{i}" for t, i, _, _ in plugin_rows(run_ctr(address, "plugins", "ls").stdout)}
    assert {f"{r['type']}.{r['id']}" for r in rows} == listed

    def depth(line: str) -> int:
        return line.index("io.containerd.")

    drawn_at: dict[str, int] = {}
    edges: set[tuple[str, str]] = set()
    stack: list[tuple[int, str]] = []  # (depth, uri) of the drawn plugins above
    for n, line in enumerate(lines):
        body = line[depth(line):]
        while stack and stack[-1][0] >= depth(line):
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if m := _DRAWN.fullmatch(body):
            uri = m.group("uri")
            assert uri not in drawn_at, f"{uri} drawn twice: lines {drawn_at.get(uri)} and {n}\n" + "\n".join(lines)
            drawn_at[uri] = n
            stack.append((depth(line), uri))
            targets = [uri]
        else:
            m = _BACK.fullmatch(body)
            assert m, f"neither a plugin nor a back-reference: {line!r}"
            ids = m.group("ids").split(",") if m.group("ids") else [m.group("id")]
            targets = [f"{m.group('type')}.{i}" for i in ids]
            for t in targets:
                assert drawn_at.get(t, n) < n, f"{t} referred to on line {n} before it is drawn"
            assert parent, f"a back-reference at the top: {line!r}"
        if parent:
            edges.update((parent, t) for t in targets)
    assert set(drawn_at) == listed

    by_uri = {f"{r['type']}.{r['id']}": r for r in rows}
    wanted = {(q, p) for p, row in by_uri.items() for q, other in by_uri.items()
              if q != p and any(r in ("*", other["type"]) for r in row["requires"])}
    assert edges == wanted, (sorted(edges - wanted), sorted(wanted - edges))
    return lines
