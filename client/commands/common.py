"""What every command group shares: the error a command words itself,
Go-style durations, and ctr's `<name> [<key>=<value>...]` arguments."""

from __future__ import annotations

import argparse


class CommandError(Exception):
    """A failure worded by the command itself, printed as `pyctr: <msg>`."""


def _parse_duration(text: str) -> float:
    """Go-style durations as ctr takes them: 10s, 500ms, 1m, or seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
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
