"""The gzip reader the differ unpacks layers with.

Inflating is most of an Apply's CPU time. ISA-L (PyPI `isal`, Intel's
storage acceleration library behind a GzipFile-compatible `igzip`)
inflates a 27 MiB tar.gz of Python's library at ~760 MiB/s of output here,
zlib-ng (PyPI `zlib-ng`) at ~690 MiB/s, Python's zlib at ~290 MiB/s
(bench numbers in the commit that chose it). So `igzip` is used when it
imports, and Python's own gzip otherwise: the output is the same bytes
either way, only the speed differs.

With ISA-L the raw reader under `igzip.IGzipFile` is used directly, with
a 1 MiB input buffer: each read inflates up to what it is asked (1 MiB)
with the GIL dropped once. Behind IGzipFile's BufferedReader the same
megabyte took several GIL round trips, and each one waits while the
applying thread runs Python: a pull's inflating thread spent more time
waiting for the GIL than inflating. Multi-member streams, zero padding
and every error (cut short, bad CRC or length, corrupt deflate) come out
the same as from IGzipFile (the same C reader).

`DECOMPRESS_ERRORS` is every exception class that means "the deflate
stream is corrupt", whichever reader is in use, so the archive code can
word them all as Go's flate reader does.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, BinaryIO

try:
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
except ImportError:  # a build without the wheel: Python's zlib still works
    _igzip = None
    _isal_zlib = None

INPUT_BUFFER = 1 << 20
# the C reader igzip.IGzipFile wraps (isal >= 1.0); IGzipFile itself otherwise
_RAW_READER = getattr(_isal_zlib, "_GzipReader", None)

IMPLEMENTATION = "isal" if _igzip is not None else "zlib"
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (zlib.error,) + (
    (_isal_zlib.error,) if _isal_zlib is not None else ())


def gzip_reader(fileobj: BinaryIO) -> Any:
    """A file object yielding the inflated bytes of the gzip stream in
    `fileobj` (every member, as gzip readers do)."""
    if _RAW_READER is not None:
        return _RAW_READER(fileobj, INPUT_BUFFER)
    if _igzip is not None:
        return _igzip.IGzipFile(fileobj=fileobj, mode="rb")
    return gzip.GzipFile(fileobj=fileobj, mode="rb")
