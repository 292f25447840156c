"""Plugin initialisation order (core/graph.py) and registration checks.

The ordering cases restate the facts of containerd's own graph tests
(plugin/plugin_test.go in containerd 1.6): the same registrations, in the
same registration order, must come out in the same order. The cycle cases
are pycontainerd's: containerd 1.x recursed forever there (containerd
#8575); here the cycle is an error that names its members.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from pycontainerd.core.graph import CycleError, order
from pycontainerd.core.registry import PluginType, Registration


async def _init(ic):  # a real async init; ordering never calls it
    return None


def reg(type_: str, id_: str, *requires: str, **kw) -> Registration:
    return Registration(type=type_, id=id_, requires=tuple(requires), init=_init, **kw)


def uris(registrations) -> list[str]:
    return [r.uri for r in registrations]


def ordered_with_deadline(registrations, **kw):
    """order() in a worker thread: a hang fails the test instead of the run."""
    result: dict = {}

    def run():
        try:
            result["value"] = order(registrations, **kw)
        except BaseException as exc:  # handed back to the test
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "order() did not return within 5 s"
    if "error" in result:
        raise result["error"]
    return result["value"]


# -- containerd's TestPluginGraph ----------------------------------------------


def test_star_requirement_goes_after_everything_else():
    regs = [reg("grpc", "introspection", "*"), reg("service", "container")]
    assert uris(order(regs)) == ["service.container", "grpc.introspection"]


def test_type_requirement_is_placed_first():
    regs = [reg("service", "container", "metadata"), reg("metadata", "bolt")]
    assert uris(order(regs)) == ["metadata.bolt", "service.container"]


def test_multiple_requirements_in_the_order_they_are_listed():
    regs = [
        reg("metadata", "bolt", "content", "snapshotter"),
        reg("snapshotter", "overlayfs"),
        reg("content", "content"),
    ]
    assert uris(order(regs)) == ["content.content", "snapshotter.overlayfs", "metadata.bolt"]


def test_disabled_plugin_is_left_out():
    regs = [reg("content", "content"), reg("disable", "disable")]
    assert uris(order(regs, disabled=lambda r: r.type == "disable")) == ["content.content"]


# -- containerd's TestContainerdPlugin: containerd 1.6's own plugin set ----------

P = PluginType
TASKS_REQUIRES = (P.RUNTIME, P.RUNTIME_V2, P.METADATA, P.TASK_MONITOR)

CONTAINERD_PLUGINS = [
    reg(P.TASK_MONITOR, "cgroups"),
    reg(P.SERVICE, "tasks-service", *TASKS_REQUIRES),
    reg(P.SERVICE, "introspection-service"),
    reg(P.SERVICE, "namespaces-service", P.METADATA),
    reg(P.GRPC, "namespaces", P.SERVICE),
    reg(P.GRPC, "content", P.SERVICE),
    reg(P.GRPC, "containers", P.SERVICE),
    reg(P.SERVICE, "containers-service", P.METADATA),
    reg(P.GRPC, "events"),
    reg(P.GRPC, "leases", P.SERVICE),
    reg(P.SERVICE, "leases-service", P.METADATA),
    reg(P.GRPC, "diff", P.SERVICE),
    reg(P.SERVICE, "diff-service", P.DIFF),
    reg(P.SERVICE, "snapshots-service", P.METADATA),
    reg(P.GRPC, "snapshots", P.SERVICE),
    reg(P.GRPC, "version"),
    reg(P.GRPC, "images", P.SERVICE),
    reg(P.GC, "scheduler", P.METADATA),
    reg(P.RUNTIME_V2, "task", P.METADATA),
    reg(P.GRPC, "tasks", P.SERVICE),
    reg(P.GRPC, "introspection", "*"),
    reg(P.SERVICE, "content-service", P.METADATA),
    reg(P.GRPC, "healthcheck"),
    reg(P.INTERNAL, "opt"),
    reg(P.GRPC, "cri", P.SERVICE),
    reg(P.RUNTIME, "linux", P.METADATA),
    reg(P.INTERNAL, "restart", P.SERVICE),
    reg(P.DIFF, "walking", P.METADATA),
    reg(P.SNAPSHOT, "native"),
    reg(P.SNAPSHOT, "overlayfs"),
    reg(P.CONTENT, "content"),
    reg(P.METADATA, "bolt", P.CONTENT, P.SNAPSHOT),
]

CONTAINERD_ORDER = [
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.content.v1.content",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.metadata.v1.bolt",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.service.v1.introspection-service",
    "io.containerd.service.v1.namespaces-service",
    "io.containerd.service.v1.containers-service",
    "io.containerd.service.v1.leases-service",
    "io.containerd.differ.v1.walking",
    "io.containerd.service.v1.diff-service",
    "io.containerd.service.v1.snapshots-service",
    "io.containerd.service.v1.content-service",
    "io.containerd.grpc.v1.namespaces",
    "io.containerd.grpc.v1.content",
    "io.containerd.grpc.v1.containers",
    "io.containerd.grpc.v1.events",
    "io.containerd.grpc.v1.leases",
    "io.containerd.grpc.v1.diff",
    "io.containerd.grpc.v1.snapshots",
    "io.containerd.grpc.v1.version",
    "io.containerd.grpc.v1.images",
    "io.containerd.gc.v1.scheduler",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.grpc.v1.healthcheck",
    "io.containerd.internal.v1.opt",
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.restart",
    "io.containerd.grpc.v1.introspection",
]


def test_containerd_own_plugin_set_comes_out_in_containerd_order():
    assert uris(order(CONTAINERD_PLUGINS)) == CONTAINERD_ORDER


def test_every_plugin_after_the_plugins_it_requires():
    ordered = order(CONTAINERD_PLUGINS)
    position = {r.uri: i for i, r in enumerate(ordered)}
    for r in ordered:
        for other in ordered:
            if other is r:
                continue
            if "*" in r.requires or other.type in r.requires:
                assert position[other.uri] < position[r.uri], f"{other.uri} must come before {r.uri}"


def test_order_accepts_any_iterable_and_leaves_the_input_alone():
    snapshot = list(CONTAINERD_PLUGINS)
    assert uris(order(iter(CONTAINERD_PLUGINS))) == CONTAINERD_ORDER
    assert CONTAINERD_PLUGINS == snapshot


# -- registration order, disabled plugins, missing types -------------------------------


def test_unrelated_plugins_keep_registration_order():
    regs = [reg("t3", "c"), reg("t1", "a"), reg("t2", "b"), reg("t1", "z")]
    assert uris(order(regs)) == ["t3.c", "t1.a", "t2.b", "t1.z"]


def test_all_plugins_of_a_required_type_come_in_registration_order():
    regs = [
        reg("service", "s", "snapshotter"),
        reg("snapshotter", "zfs"),
        reg("other", "o"),
        reg("snapshotter", "btrfs"),
    ]
    assert uris(order(regs)) == ["snapshotter.zfs", "snapshotter.btrfs", "service.s", "other.o"]


def test_requirements_are_placed_recursively():
    regs = [
        reg("grpc", "containers", "service"),
        reg("service", "containers-service", "metadata"),
        reg("metadata", "bolt", "content"),
        reg("content", "content"),
    ]
    assert uris(order(regs)) == [
        "content.content",
        "metadata.bolt",
        "service.containers-service",
        "grpc.containers",
    ]


def test_a_shared_requirement_is_placed_once():
    regs = [
        reg("grpc", "a", "service"),
        reg("grpc", "b", "service"),
        reg("service", "s"),
    ]
    assert uris(order(regs)) == ["service.s", "grpc.a", "grpc.b"]


def test_diamond_is_not_mistaken_for_a_cycle():
    regs = [
        reg("top", "t", "left", "right"),
        reg("left", "l", "base"),
        reg("right", "r", "base"),
        reg("base", "b"),
    ]
    assert uris(order(regs)) == ["base.b", "left.l", "right.r", "top.t"]


def test_disabled_plugin_is_not_pulled_in_by_a_requirement():
    regs = [
        reg("metadata", "bolt", "snapshotter"),
        reg("snapshotter", "btrfs"),
        reg("snapshotter", "overlayfs"),
    ]
    ordered = order(regs, disabled=lambda r: r.uri == "snapshotter.btrfs")
    assert uris(ordered) == ["snapshotter.overlayfs", "metadata.bolt"]


def test_star_plugin_does_not_pull_in_disabled_plugins():
    regs = [reg("grpc", "introspection", "*"), reg("a", "x"), reg("b", "y")]
    ordered = order(regs, disabled=lambda r: r.type == "a")
    assert uris(ordered) == ["b.y", "grpc.introspection"]


def test_disabling_a_plugin_can_remove_everything():
    regs = [reg("a", "x"), reg("b", "y", "a")]
    assert order(regs, disabled=lambda r: True) == []


def test_plugin_whose_required_type_has_no_plugin_is_still_ordered():
    regs = [reg("grpc", "cri", "io.containerd.event.v1", "service"), reg("service", "s")]
    assert uris(order(regs)) == ["service.s", "grpc.cri"]


def test_plugin_whose_requirement_is_all_disabled_is_still_ordered():
    regs = [reg("service", "s", "snapshotter"), reg("snapshotter", "zfs")]
    assert uris(order(regs, disabled=lambda r: r.type == "snapshotter")) == ["service.s"]


def test_empty_input():
    assert order([]) == []


def test_disabled_filter_sees_the_registration():
    seen = []

    def disabled(r: Registration) -> bool:
        seen.append(r.uri)
        return r.id == "off"

    regs = [reg("a", "on"), reg("a", "off")]
    assert uris(order(regs, disabled=disabled)) == ["a.on"]
    assert sorted(seen) == ["a.off", "a.on"]


# -- cycles -------------------------------------------------------------------------


def test_two_plugin_cycle_is_an_error_naming_both():
    regs = [reg("a", "x", "b"), reg("b", "y", "a")]
    with pytest.raises(CycleError) as info:
        ordered_with_deadline(regs)
    assert str(info.value) == "plugin dependency cycle: a.x -> b.y -> a.x"
    assert info.value.cycle == ["a.x", "b.y", "a.x"]


def test_three_plugin_cycle_is_an_error_naming_all_three():
    regs = [reg("a", "x", "b"), reg("b", "y", "c"), reg("c", "z", "a")]
    with pytest.raises(CycleError) as info:
        ordered_with_deadline(regs)
    assert str(info.value) == "plugin dependency cycle: a.x -> b.y -> c.z -> a.x"


def test_cycle_message_names_only_the_members():
    # d.w leads into the cycle but is not part of it
    regs = [reg("d", "w", "a"), reg("a", "x", "b"), reg("b", "y", "a")]
    with pytest.raises(CycleError) as info:
        ordered_with_deadline(regs)
    assert info.value.cycle == ["a.x", "b.y", "a.x"]
    assert "d.w" not in str(info.value)


def test_star_plugin_required_by_another_is_a_cycle():
    regs = [reg("grpc", "introspection", "*"), reg("service", "s", "grpc")]
    with pytest.raises(CycleError) as info:
        ordered_with_deadline(regs)
    message = str(info.value)
    assert "grpc.introspection" in message and "service.s" in message


def test_two_star_plugins_are_a_cycle():
    regs = [reg("a", "x", "*"), reg("b", "y", "*")]
    with pytest.raises(CycleError) as info:
        ordered_with_deadline(regs)
    assert info.value.cycle == ["a.x", "b.y", "a.x"]


def test_cycle_is_a_value_error():
    # callers that catch ValueError for bad plugin declarations catch this too
    with pytest.raises(ValueError):
        order([reg("a", "x", "b"), reg("b", "y", "a")])


def test_disabling_a_member_breaks_the_cycle():
    regs = [reg("a", "x", "b"), reg("b", "y", "a"), reg("c", "z")]
    ordered = ordered_with_deadline(regs, disabled=lambda r: r.uri == "b.y")
    assert uris(ordered) == ["a.x", "c.z"]


def test_long_chain_is_ordered_without_hanging():
    n = 200
    regs = [reg(f"t{i}", "p", f"t{i + 1}") for i in range(n)] + [reg(f"t{n}", "p")]
    ordered = ordered_with_deadline(regs)
    assert uris(ordered) == [f"t{i}.p" for i in range(n, -1, -1)]


# -- Registration.validate ------------------------------------------------------------


def test_valid_registration_passes():
    reg(P.GRPC, "introspection", "*").validate()
    reg(P.METADATA, "bolt", P.CONTENT, P.SNAPSHOT).validate()


def test_registration_requiring_its_own_type_is_rejected():
    with pytest.raises(ValueError) as info:
        reg(P.SNAPSHOT, "overlayfs", P.CONTENT, P.SNAPSHOT).validate()
    message = str(info.value)
    assert "io.containerd.snapshotter.v1.overlayfs" in message
    assert "own type" in message


def test_star_combined_with_other_types_is_rejected():
    with pytest.raises(ValueError) as info:
        reg(P.GRPC, "introspection", "*", P.SERVICE).validate()
    assert "io.containerd.grpc.v1.introspection" in str(info.value)
    assert '"*"' in str(info.value)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"type": "", "id": "x"}, "type required"),
        ({"type": P.GRPC, "id": ""}, "id required"),
        ({"type": P.GRPC, "id": "x", "init": "not a function"}, "init is not callable"),
        ({"type": P.GRPC, "id": "x", "config": dict}, "config must be a dataclass"),
    ],
)
def test_incomplete_registration_is_rejected(kwargs, expected):
    kwargs = {"init": _init, **kwargs}
    with pytest.raises(ValueError, match=expected):
        Registration(**kwargs).validate()


def test_registration_is_frozen_keyword_only_and_has_uri():
    r = reg(P.SNAPSHOT, "native")
    assert r.uri == "io.containerd.snapshotter.v1.native"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Registration(P.SNAPSHOT, "native", _init)  # type: ignore[misc]


def test_config_dataclass_is_accepted():
    @dataclasses.dataclass
    class Cfg:
        root_path: str = ""

    reg(P.SNAPSHOT, "native", config=Cfg).validate()
