"""What the README and config.toml.example promise stays true: the plugin
in the README is the one the suite installs, its links lead to files in the
repository, the example config loads to the defaults, every pyctr command
the README shows parses, `make bench` runs the benchmarks the README
reports, the stop command reads the pid where the daemon writes it.
(tests/e2e/test_e2e_readme.py runs the README's command blocks against
real daemons.)"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex

from pycontainerd.client.cli import build_parser
from pycontainerd.client.client import CONNECT_TIMEOUT, DEFAULT_NAMESPACE
from pycontainerd.core import config
from pycontainerd.core.daemon import SocketLock

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


# -- the README's commands and claims ------------------------------------------------------------

def _make_recipe(target: str) -> str:
    """The recipe lines of a Makefile target."""
    lines = _read("Makefile").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    return "\n".join(recipe)


def test_make_bench_runs_every_benchmark_the_readme_cites():
    cited = set(re.findall(r"bench/(\w+\.py)", _read("README.md")))
    run = set(re.findall(r"bench/(\w+\.py)", _make_recipe("bench")))
    assert {"startup.py", "snapshots.py", "ingest.py", "startup_cost.py"} <= cited
    for script in cited - run:
        # a helper a benchmark runs itself (floor_server.py, the bare reference server)
        runners = [r for r in run if script in _read("bench", r)]
        assert runners, f"the README cites bench/{script}, which `make bench` never runs"
    assert run <= {name for name in os.listdir(os.path.join(ROOT, "bench"))}


def test_readme_benchmark_run_counts_are_what_make_bench_runs():
    """Each benchmark subsection's "Medians of N ... runs" is the --runs
    `make bench` gives the script it names."""
    recipe = _make_recipe("bench")
    if "bench/all.py" in recipe:  # it runs the others, with the arguments its SCRIPTS table gives
        spec = importlib.util.spec_from_file_location("bench_all", os.path.join(ROOT, "bench", "all.py"))
        bench_all = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_all)
        recipe += "".join(f"\n\tbench/{script} {' '.join(full)}" for script, full, _ in bench_all.SCRIPTS.values())
    text = _read("README.md").split("## Benchmarks", 1)[1]
    sections = re.split(r"\n### ", text)[1:]
    assert sections
    for section in sections:
        script = re.search(r"bench/(\w+\.py)", section).group(1)
        if script == "all.py":  # the table of all the others: each row's count is its script's
            continue
        runs = re.search(r"Medians of (\d+)", section).group(1)
        assert re.search(rf"bench/{re.escape(script)} .*--runs {runs}\b", recipe), (script, runs, recipe)


def test_every_make_target_the_readme_names_exists():
    targets = set(re.findall(r"(?m)^([\w-]+):", _read("Makefile")))
    named = set(re.findall(r"`make (\w+)", _read("README.md"))) | set(re.findall(r"(?m)^make (\w+)", _read("README.md")))
    assert {"run", "test", "bench", "install"} <= named
    assert named <= targets, named - targets


def _readme_pyctr_commands() -> list[list[str]]:
    """Every `.venv/bin/pyctr ...` command in the README's code blocks, as
    argv after the program name (shell quoting undone, comments dropped)."""
    commands = []
    for block in re.findall(r"```\w*\n(.*?)```", _read("README.md"), re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ")
            for part in re.split(r";|\$\(|\)\"", line):
                part = re.split(r" [<>] ", part)[0]  # a redirection ends the command
                words = shlex.split(part, comments=True) if ".venv/bin/pyctr" in part else []
                if words and words[0] == ".venv/bin/pyctr":
                    commands.append(words[1:])
    return commands


def test_every_pyctr_command_in_the_readme_parses():
    commands = _readme_pyctr_commands()
    assert len(commands) > 30
    groups = {c[0] if not c[0].startswith("-") else c[2] for c in commands}
    assert {"version", "plugins", "namespaces", "leases", "content", "snapshots"} <= groups
    for argv in commands:
        build_parser().parse_args(argv)  # a usage error exits


def test_readme_stop_command_reads_the_pid_where_the_daemon_writes_it():
    stop = _readme_block("readme-stop")
    assert stop == f'kill -TERM "$(cat {config.DEFAULT_ADDRESS}.lock)"\n'
    assert SocketLock(config.DEFAULT_ADDRESS).path == config.DEFAULT_ADDRESS + ".lock"


def test_readme_flag_defaults_are_pyctrs():
    text = " ".join(_read("README.md").split())
    assert f"default `{config.DEFAULT_ADDRESS}`" in text
    assert f"`--connect-timeout` (default {CONNECT_TIMEOUT:g}s)" in text
    assert f"`CONTAINERD_NAMESPACE`, default `{DEFAULT_NAMESPACE}`" in text


def test_every_module_the_architecture_page_names_exists():
    import glob

    text = _read("docs", "architecture.md")
    paths = set(re.findall(r"`((?:api|pkg|core|plugins|client|testing)/[\w/*.{},]+\.py)`", text))
    assert len(paths) > 30, paths
    missing = [p for p in sorted(paths) if not glob.glob(os.path.join(ROOT, p))]
    assert missing == []
    # and every `module` `NAME` pair it points at (a table, a function) is defined there
    for path, name in re.findall(r"`((?:core|pkg|plugins)/[\w/]+\.py)` `(\w+)(?:\(\))?`", text):
        source = _read(path)
        assert re.search(rf"^(?:def |class |async def )?{name}\b", source, re.M), (path, name)


def test_config_example_shows_every_builtin_plugin_option():
    """Each built-in plugin's config section, and every key of it, appears
    (commented) in config.toml.example, as its first lines promise."""
    import dataclasses
    import tomllib

    from pycontainerd.core import registry

    commented = []
    for line in _read("config.toml.example").splitlines():
        m = re.match(r"# {0,3}(\[plugins\..*|[a-z_]+ = .*)$", line)
        if m:
            commented.append(m.group(1))
    shown = tomllib.loads("\n".join(commented))["plugins"]
    regs, _ = registry.discover(entry_points=False)
    wanted = {r.uri: {f.name for f in dataclasses.fields(r.config)} for r in regs if r.config is not None}
    assert {uri: set(shown.get(uri, {})) for uri in wanted} == wanted
