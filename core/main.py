"""The `pycontainerd` command: run the daemon, or print its config.

    pycontainerd [--config F] [--log-level L] [--address A] [--root R] [--state S]
    pycontainerd config default
    pycontainerd config dump [--config F]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys

import structlog

from . import config as configmod
from . import log as logmod
from . import registry
from .daemon import Daemon, StartError
from .graph import CycleError
from .version import VERSION


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
    return p


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
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await daemon.start()
    await stop_requested.wait()
    structlog.get_logger(__name__).info("stop requested")
    await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "config":
            if args.config_command == "default":
                return _print_config(configmod.Config())
            return _print_config(load_config(args.sub_config or args.config))

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
        asyncio.run(_run(daemon))
        return 0
    except (configmod.ConfigError, StartError, CycleError, ValueError) as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
