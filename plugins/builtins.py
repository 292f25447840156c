"""The built-in plugins, as containerd's cmd/containerd/builtins*.go list them.

`MODULES`: the plugin modules, in registration order (which is also the
order containerd's graph walk starts from). `PROXY_CLIENTS`: for each
`[proxy_plugins]` type, the plugin type it stands for and the factory of
its client. `CONFIG_ALIASES`: containerd's section names that a built-in
plugin reads as its own. `SERVE_COMMANDS`: the `pycontainerd <kind> serve` commands and
the module that implements each (imported only when that command runs).

Only strings here: the daemon imports this module at every start.
"""

from __future__ import annotations

MODULES: tuple[str, ...] = (
    # first, requiring nothing, so it is initialised before every plugin
    # that adds its series to the registry (docs/architecture.md, "Metrics")
    "pycontainerd.plugins.metrics.endpoint",
    "pycontainerd.plugins.events.exchange",
    "pycontainerd.plugins.content.local",
    "pycontainerd.plugins.metadata.sqlite",
    "pycontainerd.plugins.gc.scheduler",
    "pycontainerd.plugins.snapshotters.native",
    "pycontainerd.plugins.snapshotters.overlayfs",
    "pycontainerd.plugins.snapshotters.btrfs",
    "pycontainerd.plugins.differ.walking",
    "pycontainerd.plugins.monitor.cgroups",
    "pycontainerd.plugins.services.introspection",
    "pycontainerd.plugins.services.namespaces",
    "pycontainerd.plugins.services.leases",
    "pycontainerd.plugins.services.images",
    "pycontainerd.plugins.services.containers",
    "pycontainerd.plugins.services.tasks",
    "pycontainerd.plugins.services.snapshots",
    "pycontainerd.plugins.services.content",
    "pycontainerd.plugins.services.diff",
    "pycontainerd.plugins.services.version",
    "pycontainerd.plugins.services.events",
    "pycontainerd.plugins.events.ttrpc",
    "pycontainerd.plugins.runtimes.v1.runtime",
    "pycontainerd.plugins.runtimes.v2.manager",
    "pycontainerd.plugins.services.healthcheck",
)

PROXY_CLIENTS: dict[str, tuple[str, str]] = {
    "snapshot": ("io.containerd.snapshotter.v1", "pycontainerd.plugins.snapshotters.proxy:new_client"),
    "content": ("io.containerd.content.v1", "pycontainerd.plugins.content.proxy:new_client"),
}

# containerd's name of a plugin section -> the plugin that reads it here:
# containerd's own config.toml keeps its metadata options under bolt's name
CONFIG_ALIASES: dict[str, str] = {
    "io.containerd.metadata.v1.bolt": "io.containerd.metadata.v1.sqlite",
}

# command -> (help, module with `add_arguments(parser)` and `main(args)`)
SERVE_COMMANDS: dict[str, tuple[str, str]] = {
    "snapshotter": ("run one snapshotter standalone (for [proxy_plugins])", "pycontainerd.plugins.snapshotters.serve"),
    "content": ("run a content store standalone (for [proxy_plugins])", "pycontainerd.plugins.content.serve"),
}

# other `pycontainerd <command>`s that live with the plugins they read:
# command -> (help, module with `main(args)`), imported only when it runs
COMMANDS: dict[str, tuple[str, str]] = {
    "fsck": ("check that a stopped daemon's metadata, content and snapshots agree (--repair fixes what is safe)",
             "pycontainerd.plugins.metadata.fsck"),
}
