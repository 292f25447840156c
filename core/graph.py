"""Initialisation order, computed as containerd computes it.

Walk the registrations in registration order; before each one, place every
not-yet-placed plugin whose type it requires ("*": every other plugin),
recursively, again in registration order. Disabled plugins are left out
everywhere. Unlike containerd 1.x, which recursed forever on a cycle, a
cycle here is an error that names its members.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .registry import ALL, Registration


class CycleError(ValueError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__("plugin dependency cycle: " + " -> ".join(cycle))


def order(
    registrations: Iterable[Registration],
    disabled: Callable[[Registration], bool] = lambda r: False,
) -> list[Registration]:
    regs = [r for r in registrations if not disabled(r)]
    placed: set[str] = set()
    ordered: list[Registration] = []
    stack: list[str] = []  # URIs whose requirements are being placed

    def place(reg: Registration) -> None:
        if reg.uri in placed:
            return
        if reg.uri in stack:
            raise CycleError(stack[stack.index(reg.uri):] + [reg.uri])
        stack.append(reg.uri)
        for wanted in reg.requires:
            for dep in regs:
                if dep.uri != reg.uri and (wanted == ALL or dep.type == wanted):
                    place(dep)
        stack.pop()
        placed.add(reg.uri)
        ordered.append(reg)

    for reg in regs:
        place(reg)
    return ordered

