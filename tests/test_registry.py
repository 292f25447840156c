"""registry.discover(): registrations from modules carrying the pluggy hook.

Each source of registrations is loaded on its own: one that raises, returns
garbage or declares an invalid plugin becomes a LoadFailure (an `error`
row) with its message, and the good ones keep their order. The modules
here are real module objects with a real `@hookimpl`, handed over through
`extra`, with no built-in modules and no entry points, so the tests see
exactly what they declare.
"""

from __future__ import annotations

import dataclasses
import types

import pytest

from pycontainerd.core.graph import order
from pycontainerd.core.registry import (
    ALL,
    LoadFailure,
    PluginType,
    Registration,
    discover,
    hookimpl,
)


async def _init(ic):
    return None


def reg(type_: str, id_: str, *requires: str, **kw) -> Registration:
    return Registration(type=type_, id=id_, requires=tuple(requires), init=_init, **kw)


def plugin_module(name: str, produce) -> types.ModuleType:
    """A module whose @hookimpl pycontainerd_plugins() returns produce()."""
    mod = types.ModuleType(name)

    @hookimpl
    def pycontainerd_plugins():
        return produce()

    mod.pycontainerd_plugins = pycontainerd_plugins
    return mod


def returning(*registrations):
    """A hook body that hands back these registrations."""
    return lambda: list(registrations)


def run(*modules):
    return discover(builtin=(), extra=list(modules), entry_points=False)


def uris(items) -> list[str]:
    return [i.uri for i in items]


# -- good sources --------------------------------------------------------------------


def test_nothing_to_discover():
    assert run() == ([], [])


def test_registrations_keep_module_and_declaration_order():
    first = plugin_module("first", returning(reg(PluginType.CONTENT, "content"), reg(PluginType.SNAPSHOT, "native")))
    second = plugin_module("second", returning(reg(PluginType.METADATA, "bolt", PluginType.CONTENT)))
    registrations, failures = run(first, second)
    assert failures == []
    assert uris(registrations) == [
        "io.containerd.content.v1.content",
        "io.containerd.snapshotter.v1.native",
        "io.containerd.metadata.v1.bolt",
    ]
    assert all(isinstance(r, Registration) for r in registrations)


def test_hook_may_return_a_generator_or_a_tuple():
    def gen():
        yield reg(PluginType.GC, "scheduler")
        yield reg(PluginType.INTERNAL, "opt")

    registrations, failures = run(
        plugin_module("gen", gen),
        plugin_module("tup", lambda: (reg(PluginType.GRPC, "version"),)),
    )
    assert failures == []
    assert uris(registrations) == [
        "io.containerd.gc.v1.scheduler",
        "io.containerd.internal.v1.opt",
        "io.containerd.grpc.v1.version",
    ]


def test_hook_returning_nothing_contributes_nothing():
    registrations, failures = run(plugin_module("empty", lambda: None), plugin_module("empty2", lambda: []))
    assert (registrations, failures) == ([], [])


def test_discovered_registrations_feed_the_graph():
    mod = plugin_module(
        "stack",
        returning(
            reg(PluginType.GRPC, "introspection", ALL),
            reg(PluginType.METADATA, "bolt", PluginType.CONTENT),
            reg(PluginType.CONTENT, "content"),
        ),
    )
    registrations, failures = run(mod)
    assert failures == []
    assert uris(order(registrations)) == [
        "io.containerd.content.v1.content",
        "io.containerd.metadata.v1.bolt",
        "io.containerd.grpc.v1.introspection",
    ]


# -- broken sources ------------------------------------------------------------------


def test_hook_that_raises_becomes_a_failure_with_its_message():
    def boom():
        raise RuntimeError("cannot find libbtrfs")

    good = plugin_module("good", returning(reg(PluginType.CONTENT, "content")))
    registrations, failures = run(plugin_module("broken.module", boom), good)
    assert uris(registrations) == ["io.containerd.content.v1.content"]
    assert failures == [
        LoadFailure(PluginType.INTERNAL, "broken.module", "broken.module: RuntimeError: cannot find libbtrfs")
    ]


def test_failure_of_a_source_named_like_a_plugin_uri_is_filed_under_that_uri():
    def boom():
        raise ImportError("No module named 'zfs'")

    _, failures = run(plugin_module("io.containerd.snapshotter.v1.zfs", boom))
    assert len(failures) == 1
    failure = failures[0]
    assert (failure.type, failure.id) == ("io.containerd.snapshotter.v1", "zfs")
    assert failure.uri == "io.containerd.snapshotter.v1.zfs"
    assert "ImportError: No module named 'zfs'" in failure.error


@pytest.mark.parametrize(
    "name, expected",
    [
        # a plugin URI: type is everything before the last dot
        ("io.containerd.snapshotter.v1.zfs", ("io.containerd.snapshotter.v1", "zfs")),
        ("io.containerd.grpc.v1.cri", ("io.containerd.grpc.v1", "cri")),
        # anything else is filed under the internal type with the whole name as id
        ("my_plugin", (PluginType.INTERNAL, "my_plugin")),
        ("vendor.plugins.fast", (PluginType.INTERNAL, "vendor.plugins.fast")),
        ("io.containerd.short", (PluginType.INTERNAL, "io.containerd.short")),
    ],
)
def test_failure_row_type_and_id_come_from_the_source_name(name, expected):
    def boom():
        raise ValueError("x")

    _, failures = run(plugin_module(name, boom))
    assert [(f.type, f.id) for f in failures] == [expected]


def test_hook_returning_a_non_registration_is_a_failure():
    good = reg(PluginType.CONTENT, "content")
    registrations, failures = run(plugin_module("sloppy", lambda: [{"type": "x", "id": "y"}, good]))
    assert uris(registrations) == ["io.containerd.content.v1.content"]
    assert failures == [LoadFailure(PluginType.INTERNAL, "sloppy", "sloppy: returned dict, not a Registration")]


def test_hook_returning_a_non_iterable_is_a_failure():
    registrations, failures = run(plugin_module("scalar", lambda: 42))
    assert registrations == []
    assert len(failures) == 1
    assert failures[0].id == "scalar"
    assert failures[0].error.startswith("scalar: TypeError:")


def test_invalid_registration_is_a_failure_naming_it():
    bad = reg(PluginType.GRPC, "introspection", ALL, PluginType.SERVICE)
    good = reg(PluginType.GRPC, "version")
    registrations, failures = run(plugin_module("svc", returning(bad, good)))
    assert uris(registrations) == ["io.containerd.grpc.v1.version"]
    assert len(failures) == 1
    assert failures[0].uri == "io.containerd.grpc.v1.introspection"
    assert "io.containerd.grpc.v1.introspection" in failures[0].error


def test_registration_requiring_its_own_type_is_a_failure():
    _, failures = run(plugin_module("snap", returning(reg(PluginType.SNAPSHOT, "loop", PluginType.SNAPSHOT))))
    assert uris(failures) == ["io.containerd.snapshotter.v1.loop"]
    assert "own type" in failures[0].error


def test_registration_without_id_is_filed_under_the_module():
    _, failures = run(plugin_module("anon", returning(reg(PluginType.SNAPSHOT, ""))))
    assert failures == [LoadFailure(PluginType.SNAPSHOT, "anon", "plugin io.containerd.snapshotter.v1: id required")]


def test_registration_with_a_non_dataclass_config_is_a_failure():
    class NotADataclass:
        pass

    _, failures = run(plugin_module("cfg", returning(reg(PluginType.SNAPSHOT, "x", config=NotADataclass))))
    assert uris(failures) == ["io.containerd.snapshotter.v1.x"]
    assert "config must be a dataclass" in failures[0].error


def test_duplicate_uri_keeps_the_first_and_fails_the_second():
    @dataclasses.dataclass
    class Cfg:
        root_path: str = ""

    first = reg(PluginType.SNAPSHOT, "native", config=Cfg)
    second = reg(PluginType.SNAPSHOT, "native")
    registrations, failures = run(
        plugin_module("one", returning(first)),
        plugin_module("two", returning(second, reg(PluginType.SNAPSHOT, "overlayfs"))),
    )
    assert uris(registrations) == ["io.containerd.snapshotter.v1.native", "io.containerd.snapshotter.v1.overlayfs"]
    assert registrations[0] is first
    assert failures == [
        LoadFailure(PluginType.SNAPSHOT, "native", "plugin io.containerd.snapshotter.v1.native already registered")
    ]


def test_duplicate_within_one_module_is_a_failure_too():
    registrations, failures = run(
        plugin_module("dup", returning(reg(PluginType.GRPC, "version"), reg(PluginType.GRPC, "version")))
    )
    assert uris(registrations) == ["io.containerd.grpc.v1.version"]
    assert [f.error for f in failures] == ["plugin io.containerd.grpc.v1.version already registered"]


def test_module_without_the_hook_is_a_failure():
    registrations, failures = run(types.ModuleType("nohook"))
    assert registrations == []
    assert failures == [LoadFailure(PluginType.INTERNAL, "nohook", "nohook: no @hookimpl pycontainerd_plugins")]


def test_hook_with_a_wrong_signature_is_a_failure_not_a_crash():
    mod = types.ModuleType("badsig")

    @hookimpl
    def pycontainerd_plugins(config):  # the hookspec takes no arguments
        return []

    mod.pycontainerd_plugins = pycontainerd_plugins
    good = plugin_module("good", returning(reg(PluginType.CONTENT, "content")))
    registrations, failures = run(mod, good)
    assert uris(registrations) == ["io.containerd.content.v1.content"]
    assert len(failures) == 1
    assert failures[0].id == "badsig"
    assert failures[0].error.startswith("badsig: ")
    assert "config" in failures[0].error


def test_one_broken_module_among_many_keeps_the_rest_in_order():
    def boom():
        raise OSError("disk on fire")

    registrations, failures = run(
        plugin_module("a", returning(reg(PluginType.CONTENT, "content"))),
        plugin_module("b", boom),
        plugin_module("c", returning(reg(PluginType.SNAPSHOT, "native"))),
        plugin_module("d", lambda: ["junk"]),
        plugin_module("e", returning(reg(PluginType.METADATA, "bolt"))),
    )
    assert uris(registrations) == [
        "io.containerd.content.v1.content",
        "io.containerd.snapshotter.v1.native",
        "io.containerd.metadata.v1.bolt",
    ]
    assert [f.id for f in failures] == ["b", "d"]
    assert failures[0].error == "b: OSError: disk on fire"
