"""Named failpoints, for crash tests: stop the daemon at one exact point.

containerd's tests inject faults through its failpoint package; ours are
switched on by one environment variable, read once when this module is
imported:

    PYCONTAINERD_FAILPOINTS="snapshots.commit.after-backend=pause;other=exit"

A point that is not named costs one dictionary lookup. When a named point
is reached, a warning line `failpoint reached` with the point's name goes
to the log (a test waits for it), then the action runs:

    pause   block the calling thread for good (the test then kills the daemon)
    exit    end the process at once with status 86, cleaning nothing up

The points are listed where they are placed (grep `failpoint.hit`).
"""

from __future__ import annotations

import os
import sys
import threading

import structlog

log = structlog.get_logger(__name__)

ENV = "PYCONTAINERD_FAILPOINTS"
ACTIONS = ("pause", "exit")
EXIT_STATUS = 86


def parse(spec: str) -> dict[str, str]:
    """{point: action} from `name=action;name=action`; a malformed term
    is reported on stderr and left out (a typo must not pass unnoticed)."""
    points: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in spec.split(";"))):
        name, sep, action = term.partition("=")
        name, action = name.strip(), action.strip()
        if not sep or not name or action not in ACTIONS:
            print(f"{ENV}: ignoring {term[:80]!r}: want name=action, action one of {', '.join(ACTIONS)}",
                  file=sys.stderr)
            continue
        points[name] = action
    return points


_points = parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Run the action configured for point `name`, if any."""
    action = _points.get(name)
    if action is None:
        return
    log.warning("failpoint reached", failpoint=name, action=action, pid=os.getpid())
    if action == "exit":
        os._exit(EXIT_STATUS)
    threading.Event().wait()  # pause: never returns
