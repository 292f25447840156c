"""Where a daemon lives when nothing says otherwise (containerd's defaults
package): what the daemon's config starts from and what pyctr dials, so the
client knows them without loading the daemon's config code."""

DEFAULT_ROOT = "/var/lib/pycontainerd"
DEFAULT_STATE = "/run/pycontainerd"
DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"
DEFAULT_DEBUG_ADDRESS = "/run/pycontainerd/debug.sock"  # pyctr pprof's default; [debug] address is unset by default
DEFAULT_CONFIG_PATH = "/etc/pycontainerd/config.toml"
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
