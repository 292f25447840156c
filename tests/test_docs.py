"""What the README and config.toml.example promise stays true: the plugin
in the README is the one the suite installs, its links lead to files in the
repository, and the example config loads to the defaults."""

from __future__ import annotations

import os
import re

from pycontainerd.core import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_block(name: str) -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    match = re.search(rf"<!-- {name}:begin -->\n```\w*\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_readme_plugin_is_the_tested_example_and_short():
    code = _readme_block("example-plugin")
    assert code == _read("tests", "example_plugin", "pycontainerd_example", "__init__.py")
    assert len([line for line in code.splitlines() if line.strip()]) < 40


def test_readme_pyproject_is_the_tested_example():
    assert _readme_block("example-pyproject") == _read("tests", "example_plugin", "pyproject.toml")


def test_config_example_loads_to_the_defaults():
    loaded = config.load(os.path.join(ROOT, "config.toml.example"))
    assert loaded.to_toml_dict() == config.Config().to_toml_dict()


def test_readme_links_only_to_files_in_the_repository():
    targets = re.findall(r"\]\(([^)\s]+)\)", _read("README.md"))
    assert targets, "the README links to its docs"
    for target in targets:
        assert "://" not in target, f"README links outside the repository: {target}"
        path = os.path.normpath(os.path.join(ROOT, target.split("#")[0]))
        assert path.startswith(ROOT + os.sep) and os.path.exists(path), f"README links to a missing file: {target}"
    assert "docs/architecture.md" in targets


def test_readme_shows_the_two_commands():
    text = _read("README.md")
    assert "make run" in text and "make test" in text
