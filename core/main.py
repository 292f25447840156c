"""The `pycontainerd` command: run the daemon, or print its config.

    pycontainerd [--config F] [--log-level L] [--address A] [--root R] [--state S]
    pycontainerd config default
    pycontainerd config dump [--config F]
    pycontainerd [--address A] publish --topic T --namespace N < event   (a serialized Any, as shims send)
    pycontainerd snapshotter serve --snapshotter S --address A --root R
    pycontainerd content serve --address A --root R
    pycontainerd fsck [--config F] [--root R] [--repair] [--verify-content]

The `<kind> serve` commands and `fsck` come from the plugins (plugins/builtins.py
SERVE_COMMANDS and COMMANDS): each module parses its own arguments and is imported only
when its command runs.
"""

from __future__ import annotations

import gc

# Start-up allocates some 10^5 objects that live as long as the process and
# frees almost none, so the cyclic collector's passes over them while the
# modules below load (and, in main, while the plugins load and init) are
# wasted work: ~4% of the time to ready. It runs again once the daemon serves.
_gc_was_enabled = gc.isenabled()
gc.disable()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from . import log as logmod  # noqa: E402  (before structlog's first import: see core/log.py)
import structlog  # noqa: E402

from pycontainerd.plugins.builtins import COMMANDS, SERVE_COMMANDS  # noqa: E402

from . import config as configmod  # noqa: E402
from . import registry  # noqa: E402
from .daemon import Daemon, StartError  # noqa: E402
from .graph import CycleError  # noqa: E402
from .version import VERSION  # noqa: E402

if _gc_was_enabled:
    gc.enable()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pycontainerd", description="containerd's architecture in Python")
    p.add_argument("--config", "-c", help=f"path to the config file (default {configmod.DEFAULT_CONFIG_PATH} if it exists)")
    p.add_argument("--log-level", "-l", help="trace, debug, info, warn, error, fatal, panic")
    p.add_argument("--address", "-a", help="address for the gRPC socket")
    p.add_argument("--root", help="root directory for persistent data")
    p.add_argument("--state", help="state directory for runtime data")
    p.add_argument("--version", "-v", action="version", version=f"pycontainerd {VERSION}")
    sub = p.add_subparsers(dest="command")
    cfg = sub.add_parser("config", help="information about the configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("default", help="print the default config, every plugin's section")
    dump = cfg_sub.add_parser("dump", help="print the effective config after imports and merging")
    dump.add_argument("--config", "-c", dest="sub_config")
    pub = sub.add_parser("publish", help="forward an event read from stdin to the daemon's events service")
    pub.add_argument("--topic", default="", help="topic of the event, e.g. /tasks/exit")
    pub.add_argument("--namespace", default="", help="namespace of the event")
    for kind, (help_text, _) in SERVE_COMMANDS.items():
        # `serve`'s own arguments are the plugin module's to parse
        kind_sub = sub.add_parser(kind, help=help_text).add_subparsers(dest=f"{kind}_command", required=True)
        kind_sub.add_parser("serve", help=help_text, add_help=False)
    for name, (help_text, _) in COMMANDS.items():  # their own arguments are their module's to parse
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def publish(address: str, topic: str, namespace: str, data: bytes | None) -> int:
    """containerd's `publish`, run by v1 shims per event (core/publish.py)."""
    from .publish import publish as publish_event

    return publish_event(address, topic, namespace, data)


def load_config(path: str | None) -> configmod.Config:
    if path:
        return configmod.load(path)  # a missing file given explicitly is an error
    if os.path.exists(configmod.DEFAULT_CONFIG_PATH):
        return configmod.load(configmod.DEFAULT_CONFIG_PATH)
    return configmod.Config()


def with_plugin_defaults(cfg: configmod.Config, regs: list[registry.Registration]) -> configmod.Config:
    """A copy of cfg whose plugin tables hold every plugin's effective
    config (its defaults overlaid with what the files set)."""
    plugins = dict(cfg.plugins)
    for reg in regs:
        if reg.config is not None:
            plugins[reg.uri] = configmod._to_plain(configmod.decode_plugin_config(reg.config, cfg, reg.uri))
    return dataclasses.replace(cfg, plugins=plugins)


def _print_config(cfg: configmod.Config) -> int:
    regs, _ = registry.discover()
    sys.stdout.write(with_plugin_defaults(cfg, regs).dumps())
    return 0


async def _run(daemon: Daemon) -> None:
    from pycontainerd.core import memory

    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_stacks)  # containerd's: every stack to the log
    try:
        await daemon.start()
    finally:
        gc.enable()  # off since main() started
    daemon.tasks.spawn("memory-settle", memory.Settler().run())
    _notify_systemd("READY=1")
    await stop_requested.wait()
    structlog.get_logger(__name__).info("stop requested")
    _notify_systemd("STOPPING=1")
    await daemon.stop()


def _dump_stacks() -> None:
    from . import stacks

    task = asyncio.get_running_loop().create_task(stacks.dump_to_log(), name="sigusr1-stack-dump")
    _dumps.add(task)  # held until done: the loop keeps only weak references
    task.add_done_callback(_dumps.discard)


_dumps: set = set()


def _notify_systemd(state: str) -> None:
    """Tell systemd (Type=notify units) where the daemon is; a notify socket
    that refuses is logged, never fatal."""
    from . import sdnotify

    try:
        sdnotify.notify(state)
    except OSError as exc:
        structlog.get_logger(__name__).warning("cannot notify systemd", state=state, error=exc.strerror or str(exc))


def main(argv: list[str] | None = None) -> int:
    was_enabled = gc.isenabled()
    gc.disable()  # until the daemon serves (see the top of this module)
    try:
        return _main(argv)
    finally:
        if was_enabled:
            gc.enable()


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in SERVE_COMMANDS:
        import importlib

        gc.enable()
        return importlib.import_module(SERVE_COMMANDS[args.command][1]).main(extra)
    if args.command in COMMANDS:
        import importlib

        gc.enable()
        # the daemon's --config/--root given before the command count for it too
        given = [*(["--config", args.config] if args.config else []), *(["--root", args.root] if args.root else [])]
        return importlib.import_module(COMMANDS[args.command][1]).main(given + extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "config":
            if args.config_command == "default":
                return _print_config(configmod.Config())
            return _print_config(load_config(args.sub_config or args.config))

        if args.command == "publish":
            address = args.address or load_config(args.config).grpc.address
            return publish(address, args.topic, args.namespace, None)  # the event: stdin, read once the topic is checked

        cfg = load_config(args.config)
        if args.address:
            cfg.grpc.address = args.address
        if args.root:
            cfg.root = args.root
        if args.state:
            cfg.state = args.state
        logmod.setup(args.log_level or cfg.debug.level or "info", cfg.debug.format or "text")
        regs, failures = registry.discover()
        daemon = Daemon(cfg, regs, failures)
        from pycontainerd.core import memory

        memory.tune_allocator()  # before any thread and the big buffers: see core/memory.py
        asyncio.run(_run(daemon))
        return 0
    except (configmod.ConfigError, StartError, CycleError, ValueError) as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # one line, never a traceback, for what the system refused
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pycontainerd: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
