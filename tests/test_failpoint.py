"""PYCONTAINERD_FAILPOINTS parsing: what the crash tests switch on."""

from __future__ import annotations

from pycontainerd.core import failpoint


def test_parse_names_and_actions():
    spec = "snapshots.commit.after-backend=pause; snapshots.prepare.after-backend = exit;"
    assert failpoint.parse(spec) == {
        "snapshots.commit.after-backend": "pause",
        "snapshots.prepare.after-backend": "exit",
    }
    assert failpoint.parse("") == {}


def test_malformed_terms_are_reported_and_left_out(capsys):
    assert failpoint.parse("a=crash;b;=pause;c=exit") == {"c": "exit"}
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "PYCONTAINERD_FAILPOINTS: ignoring 'a=crash': want name=action, action one of pause, exit",
        "PYCONTAINERD_FAILPOINTS: ignoring 'b': want name=action, action one of pause, exit",
        "PYCONTAINERD_FAILPOINTS: ignoring '=pause': want name=action, action one of pause, exit",
    ]

