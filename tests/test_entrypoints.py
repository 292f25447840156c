"""core/entrypoints.py reads the same entry points importlib.metadata does."""

from __future__ import annotations

import importlib.metadata
import sys

from pycontainerd.core import entrypoints

GROUP = "pycontainerd.plugins"


def _dist(root, dirname, text):
    d = root / dirname
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dirname.split('-')[0]}\nVersion: 1\n")
    (d / "entry_points.txt").write_text(text)


def _reference(paths):
    seen, out = set(), []
    for dist in importlib.metadata.distributions(path=paths):
        name = dist.metadata["Name"].replace("-", "_").lower()
        if name in seen:
            continue
        seen.add(name)
        out += [(ep.name, ep.value) for ep in dist.entry_points if ep.group == GROUP]
    return sorted(out)


def test_matches_importlib_metadata_including_shadowed_distributions(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _dist(first, "alpha_plugin-1.0.dist-info", f"[{GROUP}]\nio.containerd.internal.v1.alpha = alpha.mod:plugin.hook\n\n[console_scripts]\nalpha = alpha:main\n")
    _dist(first, "beta-2.0.dist-info", f"# comment\n[{GROUP}]\nbeta = beta [extra]\n")
    _dist(second, "alpha_plugin-0.9.dist-info", f"[{GROUP}]\nshadowed = old.alpha\n")  # later on the path: hidden
    _dist(second, "gamma.egg-info", f"[{GROUP}]\ngamma=gamma\n")
    paths = [str(first), str(second)]
    got = sorted((ep.name, ep.value) for ep in entrypoints.entry_points(GROUP, paths))
    assert got == _reference(paths)
    assert ("shadowed", "old.alpha") not in got


def test_load_resolves_module_and_attribute_path(tmp_path, monkeypatch):
    pkg = tmp_path / "epdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class plugin:\n    value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert entrypoints.EntryPoint("x", "epdemo:plugin.value [extra]").load() == 42
    assert entrypoints.EntryPoint("x", "epdemo").load() is sys.modules["epdemo"]


def test_the_real_environment_agrees_with_importlib_metadata():
    for group in ("console_scripts", "pytest11"):
        ours = sorted((ep.name, ep.value) for ep in entrypoints.entry_points(group))
        theirs = sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group))
        assert ours == theirs
