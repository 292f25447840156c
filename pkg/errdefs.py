"""containerd's error classes (its errdefs package), free of any transport.

containerd wraps a sentinel error ("not found", "already exists", ...) under
a context message. The message crosses the wire as `<context>: <sentinel>`,
which is what the real `ctr` prints and what its client strips to rebuild
the class. Each transport maps the classes to its own status codes at its
edge: gRPC in pkg/errgrpc.py (ttrpc will have its own), so code that only
raises and catches these never imports grpc.
"""

from __future__ import annotations


class ContainerdError(Exception):
    """Base class: `message` is the context, `sentinel` the class wording."""

    sentinel = "unknown"

    def __init__(self, message: str = ""):
        self.message = message
        if not self.sentinel:  # an error whose message alone says it all
            super().__init__(message)
        else:
            super().__init__(f"{message}: {self.sentinel}" if message else self.sentinel)


class Unknown(ContainerdError):
    sentinel = "unknown"


class InvalidArgument(ContainerdError):
    sentinel = "invalid argument"


class NotFound(ContainerdError):
    sentinel = "not found"


class AlreadyExists(ContainerdError):
    sentinel = "already exists"


class FailedPrecondition(ContainerdError):
    sentinel = "failed precondition"


class Unavailable(ContainerdError):
    sentinel = "unavailable"


class NotImplementedErr(ContainerdError):
    sentinel = "not implemented"


class Aborted(ContainerdError):
    sentinel = "aborted"


class PermissionDenied(ContainerdError):
    sentinel = "permission denied"


class Canceled(ContainerdError):
    sentinel = "context canceled"


class DeadlineExceeded(ContainerdError):
    sentinel = "context deadline exceeded"


# How much of a caller's input an error message quotes: enough to recognise
# it, never a megabyte (the gRPC edge caps whole messages as well).
MAX_QUOTED = 256


def cut(text: str, limit: int = MAX_QUOTED) -> str:
    """`text` for quoting in an error: at most `limit` characters, with a
    marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def go_quote(text: str) -> str:
    """Go's %q of `text` (double quotes, backslash escapes for quotes,
    control and unprintable characters), as containerd's messages quote
    names and inputs."""
    out = []
    for ch in text:
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


def quote(text: str) -> str:
    """A caller's input as an error quotes it: cut, then Go-quoted."""
    return go_quote(cut(text))
