"""structlog set-up: text or JSON lines on stderr, at the configured level."""

from __future__ import annotations

import contextlib
import logging
import sys


@contextlib.contextmanager
def _hidden(module: str):
    """`import <module>` fails inside the block (ImportError, as if it were
    not installed), unless it is imported already; afterwards it imports
    normally again."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # the import system's "not importable" mark
    try:
        yield
    finally:
        if sys.modules.get(module, "") is None:
            del sys.modules[module]


# structlog.dev and structlog.tracebacks import rich, when it is installed
# (pyctr's pull progress needs it), at their own import: only to render
# exceptions prettily. The renderer set up below never does that:
# format_exc_info turns an exception into plain text before it, so rich
# would be ~80 modules loaded for nothing, ~4.6 MiB of the daemon's RSS
# and ~20 ms of its start. structlog is imported here first (core/main.py
# imports this module before anything that imports structlog), without it.
with _hidden("rich"):
    import structlog

LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")

# what setup last applied: the debug socket's /debug/loglevel reads and changes it
_current = {"level": "info", "format": "text"}


def level() -> str:
    """The level in force (as it was set: "warn", "debug", ...)."""
    return _current["level"]


def set_level(new: str) -> None:
    """Change the level at run time, keeping the format (ValueError if unknown).
    Loggers are not cached (cache_logger_on_first_use=False), so every
    module's logger follows from its next call on."""
    setup(new, _current["format"])


def setup(level: str = "info", fmt: str = "text") -> None:
    level = (level or "info").lower()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    numeric = {
        "trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
        "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
        "fatal": logging.CRITICAL, "panic": logging.CRITICAL,
    }[level]
    if fmt not in ("", "text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _current.update(level=level, format=fmt or "text")
