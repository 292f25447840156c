"""The `pycontainerd` console script.

`pycontainerd --address A publish --topic T --namespace N` is what the v1
shim (containerd-shim) runs for every event it sends, so that command goes
straight to core/publish.py: grpc and the events stubs, nothing of the
daemon (importing core/main.py, which the daemon needs, would double its
cost). Every other command, and `publish` without `--address` (which reads
the config for it), goes to core/main.py.
"""

from __future__ import annotations

import sys

# the daemon's global options that take a value, as core/main.py declares them
_VALUED = {"--config", "-c", "--log-level", "-l", "--address", "-a", "--root", "--state"}
_PUBLISH_VALUED = {"--topic", "--namespace"}


def _publish_args(argv: list[str]) -> tuple[str, str, str] | None:
    """(address, topic, namespace) when argv is a publish with --address
    and nothing this fast path does not know; else None."""
    address, i = None, 0
    while i < len(argv) and argv[i] != "publish":
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name not in _VALUED:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            value, i = argv[i + 1], i + 1
        if name in ("--address", "-a"):
            address = value
        i += 1
    if address is None or i >= len(argv):
        return None
    found = {"--topic": "", "--namespace": ""}
    rest = argv[i + 1:]
    j = 0
    while j < len(rest):
        name, eq, value = rest[j].partition("=")
        if name not in _PUBLISH_VALUED:
            return None
        if not eq:
            if j + 1 >= len(rest):
                return None
            value, j = rest[j + 1], j + 1
        found[name] = value
        j += 1
    return address, found["--topic"], found["--namespace"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    publish = _publish_args(args)
    if publish is not None:
        from .publish import publish as publish_event

        return publish_event(*publish)
    from .main import main as daemon_main

    return daemon_main(argv)


if __name__ == "__main__":
    sys.exit(main())
