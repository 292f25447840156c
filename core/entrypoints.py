"""Entry points of one group, read straight from the installed metadata.

importlib.metadata parses every distribution's METADATA with the email
package to offer far more than discovery needs; on this project's start-up
path that costs more than everything else the core does (DESIGN: "query
only our group"). This reads each distribution's entry_points.txt, the
same files with the same precedence (the first distribution of a name on
sys.path wins), and nothing else.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator

_DIST_DIR = re.compile(r"^(?P<name>[^-]+)(-[^-]+)?\.(dist|egg)-info$")


@dataclass(frozen=True)
class EntryPoint:
    """One line of an entry_points.txt group: a name and `module:attr`."""

    name: str
    value: str  # "module[.sub]:attr[.attr]" with optional "[extras]"

    def load(self) -> Any:
        spec = self.value.split("[", 1)[0].strip()
        module_name, _, attrs = spec.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _parse(text: str, group: str) -> Iterator[EntryPoint]:
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            yield EntryPoint(name.strip(), value.strip())


def entry_points(group: str, path: list[str] | None = None) -> list[EntryPoint]:
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path if path is None else path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # zip files, missing dirs, path hooks
            continue
        for item in names:
            m = _DIST_DIR.match(item)
            if not m:
                continue
            dist = _normalize(m.group("name"))
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", item, "entry_points.txt"), encoding="utf-8") as f:
                    found += _parse(f.read(), group)
            except OSError:
                continue
    return found
