"""What every command group shares: the error a command words itself,
Go-style durations, and ctr's `<name> [<key>=<value>...]` arguments."""

from __future__ import annotations

import argparse

from pycontainerd.pkg import goduration


class CommandError(Exception):
    """A failure worded by the command itself, printed as `pyctr: <msg>`."""


def _parse_duration(text: str) -> float:
    """Go durations as ctr takes them (10s, 500ms, 1m30s), or bare seconds; in seconds."""
    try:
        return goduration.parse(text) / goduration.SECOND
    except goduration.DurationError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}") from None


def _labels(args: list[str]) -> tuple[str, dict[str, str]]:
    """ctr's ObjectWithLabelArgs: the first arg, then key=value pairs."""
    if not args:
        return "", {}
    labels = {}
    for a in args[1:]:
        k, _, v = a.partition("=")
        labels[k] = v
    return args[0], labels
