"""Failures the client finds itself, worded as containerd's client words
them: a plain message, with no error-kind suffix (`: unknown`) appended,
since no server sent a code."""

from __future__ import annotations

from pycontainerd.pkg import errdefs


class ClientError(errdefs.Unknown):
    """A client-side failure: `str()` is the message alone."""

    def __str__(self) -> str:
        return self.message
