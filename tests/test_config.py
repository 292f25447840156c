"""config.toml loading (core/config.py): containerd's version 2 format.

Real files in tmp_path, read by `load()`. What a user checks: a containerd
1.6 config loads unchanged; imports are found, merged and read once; a
mistake is reported with the file, the table, the key and a suggestion.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap

import pytest

from pycontainerd.core import config as configmod
from pycontainerd.core.config import Config, ConfigError, decode, decode_plugin_config, load

CRI = "io.containerd.grpc.v1.cri"


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(path)


def load_text(tmp_path, text: str) -> Config:
    return load(write(tmp_path / "config.toml", text))


def load_error(tmp_path, text: str, name: str = "config.toml") -> str:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


# -- defaults ------------------------------------------------------------------------


def test_defaults_of_an_empty_version_2_file(tmp_path):
    cfg = load_text(tmp_path, "version = 2\n")
    assert cfg.version == 2
    assert cfg.root == "/var/lib/pycontainerd"
    assert cfg.state == "/run/pycontainerd"
    assert cfg.grpc.address == "/run/pycontainerd/pycontainerd.sock"
    assert cfg.ttrpc_address == "/run/pycontainerd/pycontainerd.sock.ttrpc"
    assert cfg.grpc.max_recv_message_size == 16 * 1024 * 1024
    assert cfg.grpc.max_send_message_size == 16 * 1024 * 1024
    assert (cfg.grpc.uid, cfg.grpc.gid) == (0, 0)
    assert cfg.debug.level == ""
    assert cfg.metrics.address == ""
    assert cfg.cgroup.path == ""
    assert cfg.oom_score == 0
    assert cfg.disabled_plugins == [] and cfg.required_plugins == []
    assert cfg.plugins == {} and cfg.proxy_plugins == {}
    assert cfg.imports == []
    assert cfg.timeouts == {
        "io.containerd.timeout.shim.cleanup": "5s",
        "io.containerd.timeout.shim.load": "5s",
        "io.containerd.timeout.shim.shutdown": "3s",
        "io.containerd.timeout.task.state": "2s",
    }


def test_config_object_defaults_match_a_loaded_empty_file(tmp_path):
    assert load_text(tmp_path, "version = 2\n") == Config()


def test_defaults_are_not_shared_between_configs():
    a, b = Config(), Config()
    a.disabled_plugins.append("io.containerd.snapshotter.v1.btrfs")
    a.timeouts["io.containerd.timeout.shim.load"] = "1m"
    assert b.disabled_plugins == []
    assert b.timeouts["io.containerd.timeout.shim.load"] == "5s"


def test_explicit_ttrpc_address_wins(tmp_path):
    cfg = load_text(
        tmp_path,
        """
        version = 2
        [grpc]
          address = "/run/x/x.sock"
        [ttrpc]
          address = "/run/x/other.ttrpc"
        """,
    )
    assert cfg.ttrpc_address == "/run/x/other.ttrpc"
    cfg = load_text(tmp_path, 'version = 2\n[grpc]\naddress = "/run/x/x.sock"\n')
    assert cfg.ttrpc_address == "/run/x/x.sock.ttrpc"


def test_dump_round_trips_through_load(tmp_path):
    cfg = load_text(
        tmp_path,
        f"""
        version = 2
        root = "/srv/root"
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
        [grpc]
          address = "/run/x/x.sock"
          uid = 1000
        [plugins."{CRI}"]
          sandbox_image = "registry.k8s.io/pause:3.6"
        """,
    )
    again = load(write(tmp_path / "dumped.toml", cfg.dumps()))
    assert again.to_toml_dict() == cfg.to_toml_dict()
    assert again.plugins[CRI] == {"sandbox_image": "registry.k8s.io/pause:3.6"}


# -- containerd 1.6 files load unchanged ------------------------------------------------

# `containerd config default` of containerd 1.6.20 (Debian 12), verbatim.
CONTAINERD_1_6_DEFAULT = """\
disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/var/lib/containerd"
state = "/run/containerd"
temp = ""
version = 2

[cgroup]
  path = ""

[debug]
  address = ""
  format = ""
  gid = 0
  level = ""
  uid = 0

[grpc]
  address = "/run/containerd/containerd.sock"
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216
  tcp_address = ""
  tcp_tls_ca = ""
  tcp_tls_cert = ""
  tcp_tls_key = ""
  uid = 0

[metrics]
  address = ""
  grpc_histogram = false

[plugins]

  [plugins."io.containerd.gc.v1.scheduler"]
    deletion_threshold = 0
    mutation_threshold = 100
    pause_threshold = 0.02
    schedule_delay = "0s"
    startup_delay = "100ms"

  [plugins."io.containerd.grpc.v1.cri"]
    device_ownership_from_security_context = false
    disable_apparmor = false
    disable_cgroup = false
    disable_hugetlb_controller = true
    disable_proc_mount = false
    disable_tcp_service = true
    enable_selinux = false
    enable_tls_streaming = false
    enable_unprivileged_icmp = false
    enable_unprivileged_ports = false
    ignore_image_defined_volumes = false
    max_concurrent_downloads = 3
    max_container_log_line_size = 16384
    netns_mounts_under_state_dir = false
    restrict_oom_score_adj = false
    sandbox_image = "registry.k8s.io/pause:3.6"
    selinux_category_range = 1024
    stats_collect_period = 10
    stream_idle_timeout = "4h0m0s"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    systemd_cgroup = false
    tolerate_missing_hugetlb_controller = true
    unset_seccomp_profile = ""

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      conf_template = ""
      ip_pref = ""
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      disable_snapshot_annotations = true
      discard_unpacked_layers = false
      ignore_rdt_not_enabled_errors = false
      no_pivot = false
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.default_runtime]
        base_runtime_spec = ""
        cni_conf_dir = ""
        cni_max_conf_num = 0
        container_annotations = []
        pod_annotations = []
        privileged_without_host_devices = false
        runtime_engine = ""
        runtime_path = ""
        runtime_root = ""
        runtime_type = ""

        [plugins."io.containerd.grpc.v1.cri".containerd.default_runtime.options]

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          base_runtime_spec = ""
          cni_conf_dir = ""
          cni_max_conf_num = 0
          container_annotations = []
          pod_annotations = []
          privileged_without_host_devices = false
          runtime_engine = ""
          runtime_path = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            CriuImagePath = ""
            CriuPath = ""
            CriuWorkPath = ""
            IoGid = 0
            IoUid = 0
            NoNewKeyring = false
            NoPivotRoot = false
            Root = ""
            ShimCgroup = ""
            SystemdCgroup = false

      [plugins."io.containerd.grpc.v1.cri".containerd.untrusted_workload_runtime]
        base_runtime_spec = ""
        cni_conf_dir = ""
        cni_max_conf_num = 0
        container_annotations = []
        pod_annotations = []
        privileged_without_host_devices = false
        runtime_engine = ""
        runtime_path = ""
        runtime_root = ""
        runtime_type = ""

        [plugins."io.containerd.grpc.v1.cri".containerd.untrusted_workload_runtime.options]

    [plugins."io.containerd.grpc.v1.cri".image_decryption]
      key_model = "node"

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""

      [plugins."io.containerd.grpc.v1.cri".registry.auths]

      [plugins."io.containerd.grpc.v1.cri".registry.configs]

      [plugins."io.containerd.grpc.v1.cri".registry.headers]

      [plugins."io.containerd.grpc.v1.cri".registry.mirrors]

    [plugins."io.containerd.grpc.v1.cri".x509_key_pair_streaming]
      tls_cert_file = ""
      tls_key_file = ""

  [plugins."io.containerd.internal.v1.opt"]
    path = "/opt/containerd"

  [plugins."io.containerd.internal.v1.restart"]
    interval = "10s"

  [plugins."io.containerd.metadata.v1.bolt"]
    content_sharing_policy = "shared"

  [plugins."io.containerd.monitor.v1.cgroups"]
    no_prometheus = false

  [plugins."io.containerd.runtime.v1.linux"]
    no_shim = false
    runtime = "runc"
    runtime_root = ""
    shim = "containerd-shim"
    shim_debug = false

  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]
    sched_core = false

  [plugins."io.containerd.service.v1.diff-service"]
    default = ["walking"]

  [plugins."io.containerd.service.v1.tasks-service"]
    rdt_config_file = ""

  [plugins."io.containerd.snapshotter.v1.aufs"]
    root_path = ""

  [plugins."io.containerd.snapshotter.v1.btrfs"]
    root_path = ""

  [plugins."io.containerd.snapshotter.v1.devmapper"]
    async_remove = false
    base_image_size = ""
    discard_blocks = false
    fs_options = ""
    fs_type = ""
    pool_name = ""
    root_path = ""

  [plugins."io.containerd.snapshotter.v1.native"]
    root_path = ""

  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = ""
    upperdir_label = false

  [plugins."io.containerd.snapshotter.v1.zfs"]
    root_path = ""

[proxy_plugins]

[stream_processors]

  [stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]
    accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
    args = ["--decryption-keys-path", "/etc/containerd/ocicrypt/keys"]
    env = ["OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf"]
    path = "ctd-decoder"
    returns = "application/vnd.oci.image.layer.v1.tar"

  [stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]
    accepts = ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
    args = ["--decryption-keys-path", "/etc/containerd/ocicrypt/keys"]
    env = ["OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf"]
    path = "ctd-decoder"
    returns = "application/vnd.oci.image.layer.v1.tar+gzip"

[timeouts]
  "io.containerd.timeout.bolt.open" = "0s"
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"

[ttrpc]
  address = ""
  gid = 0
  uid = 0
"""


def test_containerd_1_6_default_config_loads_unchanged(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONTAINERD_1_6_DEFAULT)
    cfg = load(str(path))
    assert cfg.root == "/var/lib/containerd"
    assert cfg.state == "/run/containerd"
    assert cfg.grpc.address == "/run/containerd/containerd.sock"
    assert cfg.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert cfg.grpc.max_recv_message_size == 16777216
    assert cfg.metrics.grpc_histogram is False
    # plugin tables we have no plugin for are kept as written, nested tables included
    cri = cfg.plugins[CRI]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.6"
    assert cri["containerd"]["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["registry"]["mirrors"] == {}
    assert cfg.plugins["io.containerd.gc.v1.scheduler"]["pause_threshold"] == 0.02
    assert cfg.plugins["io.containerd.runtime.v2.task"]["platforms"] == ["linux/amd64"]
    assert len(cfg.plugins) == 16
    assert cfg.timeouts["io.containerd.timeout.bolt.open"] == "0s"
    assert cfg.timeouts["io.containerd.timeout.task.state"] == "2s"
    assert cfg.stream_processors["io.containerd.ocicrypt.decoder.v1.tar"].path == "ctd-decoder"
    assert cfg.proxy_plugins == {}
    assert cfg.imports == []


def test_hand_written_containerd_1_6_config_loads_unchanged(tmp_path):
    cfg = load_text(
        tmp_path,
        """
        version = 2
        root = "/srv/containerd/root"
        state = "/srv/containerd/state"
        oom_score = -999
        plugin_dir = "/opt/containerd/plugins"
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs"]
        required_plugins = ["io.containerd.grpc.v1.cri"]

        [grpc]
          address = "/run/k8s/containerd.sock"
          uid = 1000
          gid = 1001
          max_recv_message_size = 33554432
          max_send_message_size = 8388608

        [ttrpc]
          address = "/run/k8s/containerd.sock.ttrpc"
          uid = 1000
          gid = 1001

        [debug]
          level = "debug"
          format = "json"

        [metrics]
          address = "127.0.0.1:1338"
          grpc_histogram = true

        [cgroup]
          path = "/system.slice/containerd.service"

        [timeouts]
          "io.containerd.timeout.shim.shutdown" = "10s"

        [plugins."io.containerd.grpc.v1.cri"]
          sandbox_image = "registry.k8s.io/pause:3.9"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
          [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
            endpoint = ["https://mirror.example.com", "https://registry-1.docker.io"]

        [proxy_plugins]
          [proxy_plugins.stargz]
            type = "snapshot"
            address = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
          [proxy_plugins.blobs]
            type = "content"
            address = "/run/blobs.sock"
        """,
    )
    assert cfg.root == "/srv/containerd/root"
    assert cfg.state == "/srv/containerd/state"
    assert cfg.oom_score == -999
    assert cfg.plugin_dir == "/opt/containerd/plugins"
    assert cfg.disabled_plugins == ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs"]
    assert cfg.required_plugins == ["io.containerd.grpc.v1.cri"]
    assert cfg.grpc == configmod.GRPCConfig(
        address="/run/k8s/containerd.sock",
        uid=1000,
        gid=1001,
        max_recv_message_size=33554432,
        max_send_message_size=8388608,
    )
    assert (cfg.ttrpc.address, cfg.ttrpc.uid, cfg.ttrpc.gid) == ("/run/k8s/containerd.sock.ttrpc", 1000, 1001)
    assert cfg.ttrpc_address == "/run/k8s/containerd.sock.ttrpc"
    assert (cfg.debug.level, cfg.debug.format) == ("debug", "json")
    assert (cfg.metrics.address, cfg.metrics.grpc_histogram) == ("127.0.0.1:1338", True)
    assert cfg.cgroup.path == "/system.slice/containerd.service"
    # one timeout changed, the others keep their defaults
    assert cfg.timeouts["io.containerd.timeout.shim.shutdown"] == "10s"
    assert cfg.timeouts["io.containerd.timeout.shim.load"] == "5s"
    assert cfg.plugins[CRI] == {
        "sandbox_image": "registry.k8s.io/pause:3.9",
        "containerd": {"runtimes": {"runc": {"options": {"SystemdCgroup": True}}}},
        "registry": {"mirrors": {"docker.io": {"endpoint": ["https://mirror.example.com", "https://registry-1.docker.io"]}}},
    }
    assert cfg.proxy_plugins == {
        "stargz": configmod.ProxyPlugin(type="snapshot", address="/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"),
        "blobs": configmod.ProxyPlugin(type="content", address="/run/blobs.sock"),
    }


def test_third_party_plugin_uris_are_accepted(tmp_path):
    # containerd only asks for four dot-separated parts, not an io.containerd prefix
    cfg = load_text(
        tmp_path,
        """
        version = 2
        disabled_plugins = ["com.example.widget.v1.spinner"]
        [plugins."com.example.widget.v1.spinner"]
          speed = 3
        """,
    )
    assert cfg.disabled_plugins == ["com.example.widget.v1.spinner"]
    assert cfg.plugins["com.example.widget.v1.spinner"] == {"speed": 3}


# -- imports -----------------------------------------------------------------------------


def test_imports_relative_to_the_importing_file_with_globs(tmp_path):
    main = write(
        tmp_path / "etc" / "config.toml",
        """
        version = 2
        root = "/main"
        imports = ["conf.d/*.toml", "extra/one.toml"]
        """,
    )
    write(tmp_path / "etc" / "conf.d" / "10-state.toml", 'state = "/from-10"\n')
    write(tmp_path / "etc" / "conf.d" / "20-state.toml", 'state = "/from-20"\n')
    write(tmp_path / "etc" / "conf.d" / "ignored.txt", 'state = "/not-toml"\n')
    write(tmp_path / "etc" / "extra" / "one.toml", "oom_score = 5\n")
    # run from elsewhere: imports are relative to the file, not the cwd
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = load(main)
    finally:
        os.chdir(cwd)
    assert cfg.root == "/main"
    assert cfg.state == "/from-20"  # glob matches are read in sorted order, the later wins
    assert cfg.oom_score == 5
    assert cfg.imports == [
        str(tmp_path / "etc" / "conf.d" / "10-state.toml"),
        str(tmp_path / "etc" / "conf.d" / "20-state.toml"),
        str(tmp_path / "etc" / "extra" / "one.toml"),
    ]


def test_absolute_import(tmp_path):
    other = write(tmp_path / "elsewhere" / "x.toml", 'temp = "/tmp/x"\n')
    cfg = load_text(tmp_path, f'version = 2\nimports = ["{other}"]\n')
    assert cfg.temp == "/tmp/x"
    assert cfg.imports == [other]


def test_imports_are_read_breadth_first(tmp_path):
    # main imports a and b; a imports c. Order: main, a, b, c, so c (read
    # last) has the final word over b.
    write(tmp_path / "a.toml", 'imports = ["c.toml"]\nroot = "/a"\n')
    write(tmp_path / "b.toml", 'root = "/b"\n')
    write(tmp_path / "c.toml", 'root = "/c"\n')
    cfg = load_text(tmp_path, 'version = 2\nimports = ["a.toml", "b.toml"]\n')
    assert cfg.imports == [str(tmp_path / n) for n in ("a.toml", "b.toml", "c.toml")]
    assert cfg.root == "/c"


def test_each_file_is_read_once_and_an_import_cycle_terminates(tmp_path):
    write(tmp_path / "a.toml", 'imports = ["b.toml", "config.toml"]\ndisabled_plugins = ["io.containerd.a.v1.x"]\n')
    write(tmp_path / "b.toml", 'imports = ["./a.toml"]\ndisabled_plugins = ["io.containerd.b.v1.y"]\n')
    cfg = load_text(
        tmp_path,
        """
        version = 2
        imports = ["a.toml", "a.toml"]
        disabled_plugins = ["io.containerd.main.v1.z"]
        """,
    )
    assert cfg.imports == [str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]
    assert cfg.disabled_plugins == ["io.containerd.main.v1.z", "io.containerd.a.v1.x", "io.containerd.b.v1.y"]


def test_glob_cycle_through_parent_directory_reads_each_file_once(tmp_path):
    # conf.d/a.toml imports "../*.toml", which matches the main file again
    # under another spelling (".../conf.d/../config.toml"); it must not be
    # read a second time, or its root would override the import's.
    write(tmp_path / "conf.d" / "a.toml", 'imports = ["../*.toml"]\nroot = "/from-a"\n')
    cfg = load_text(tmp_path, 'version = 2\nroot = "/main"\nimports = ["conf.d/*.toml"]\n')
    assert cfg.root == "/from-a"
    assert cfg.imports == [str(tmp_path / "conf.d" / "a.toml")]


def test_later_files_override_scalars_and_lists_append(tmp_path):
    write(
        tmp_path / "override.toml",
        """
        oom_score = -500
        required_plugins = ["io.containerd.grpc.v1.cri"]
        disabled_plugins = ["io.containerd.snapshotter.v1.zfs"]
        [grpc]
          uid = 1000
        [debug]
          level = "debug"
        """,
    )
    cfg = load_text(
        tmp_path,
        """
        version = 2
        imports = ["override.toml"]
        oom_score = 0
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
        [grpc]
          address = "/run/x.sock"
          uid = 1
        [debug]
          level = "info"
          format = "json"
        """,
    )
    assert cfg.oom_score == -500
    assert cfg.disabled_plugins == ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs"]
    assert cfg.required_plugins == ["io.containerd.grpc.v1.cri"]
    # sections merge key by key: the address from the main file stays
    assert (cfg.grpc.address, cfg.grpc.uid) == ("/run/x.sock", 1000)
    assert (cfg.debug.level, cfg.debug.format) == ("debug", "json")


def test_plugin_tables_merge_key_by_key(tmp_path):
    write(
        tmp_path / "cri.toml",
        f"""
        [plugins."{CRI}"]
          sandbox_image = "registry.k8s.io/pause:3.9"
          [plugins."{CRI}".containerd.runtimes.runc.options]
            SystemdCgroup = true
        [plugins."io.containerd.snapshotter.v1.overlayfs"]
          upperdir_label = true
        """,
    )
    cfg = load_text(
        tmp_path,
        f"""
        version = 2
        imports = ["cri.toml"]
        [plugins."{CRI}"]
          sandbox_image = "registry.k8s.io/pause:3.6"
          max_concurrent_downloads = 3
          [plugins."{CRI}".containerd.runtimes.runc]
            runtime_type = "io.containerd.runc.v2"
        """,
    )
    assert cfg.plugins[CRI] == {
        "sandbox_image": "registry.k8s.io/pause:3.9",
        "max_concurrent_downloads": 3,
        "containerd": {"runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}}},
    }
    assert cfg.plugins["io.containerd.snapshotter.v1.overlayfs"] == {"upperdir_label": True}


def test_proxy_plugins_and_timeouts_entries_are_replaced_whole(tmp_path):
    write(
        tmp_path / "more.toml",
        """
        [proxy_plugins.stargz]
          type = "snapshot"
          address = "/run/new.sock"
        [timeouts]
          "io.containerd.timeout.shim.load" = "30s"
        """,
    )
    cfg = load_text(
        tmp_path,
        """
        version = 2
        imports = ["more.toml"]
        [proxy_plugins.stargz]
          type = "content"
          address = "/run/old.sock"
        [proxy_plugins.other]
          type = "content"
          address = "/run/other.sock"
        [timeouts]
          "io.containerd.timeout.shim.cleanup" = "1s"
        """,
    )
    assert cfg.proxy_plugins["stargz"] == configmod.ProxyPlugin(type="snapshot", address="/run/new.sock")
    assert cfg.proxy_plugins["other"].address == "/run/other.sock"
    assert cfg.timeouts["io.containerd.timeout.shim.load"] == "30s"
    assert cfg.timeouts["io.containerd.timeout.shim.cleanup"] == "1s"


def test_glob_without_matches_imports_nothing(tmp_path):
    cfg = load_text(tmp_path, 'version = 2\nimports = ["conf.d/*.toml"]\n')
    assert cfg.imports == []


def test_missing_import_is_an_error_naming_it(tmp_path):
    message = load_error(tmp_path, 'version = 2\nimports = ["missing.toml"]\n')
    assert str(tmp_path / "missing.toml") in message
    assert "does not exist" in message


def test_imported_file_may_omit_version_or_say_2(tmp_path):
    write(tmp_path / "a.toml", 'root = "/a"\n')
    write(tmp_path / "b.toml", 'version = 2\nstate = "/b"\n')
    cfg = load_text(tmp_path, 'version = 2\nimports = ["a.toml", "b.toml"]\n')
    assert (cfg.version, cfg.root, cfg.state) == (2, "/a", "/b")


def test_imported_file_with_an_older_version_does_not_change_the_version(tmp_path):
    write(tmp_path / "old.toml", 'version = 1\noom_score = 7\n')
    cfg = load_text(tmp_path, 'version = 2\nimports = ["old.toml"]\n')
    assert (cfg.version, cfg.oom_score) == (2, 7)


def test_imported_file_with_a_newer_version_is_an_error(tmp_path):
    write(tmp_path / "new.toml", "version = 3\n")
    message = load_error(tmp_path, 'version = 2\nimports = ["new.toml"]\n')
    assert str(tmp_path / "new.toml") in message
    assert "version 3" in message


# -- strictness: unknown keys, wrong types ------------------------------------------------------


def test_unknown_top_level_key_names_file_and_suggests(tmp_path):
    message = load_error(tmp_path, 'version = 2\nroott = "/x"\n')
    path = str(tmp_path / "config.toml")
    assert message == f'{path}: unknown key "roott" in the top level; did you mean "root"?'


def test_unknown_key_in_grpc_names_file_table_and_suggests(tmp_path):
    message = load_error(tmp_path, 'version = 2\n[grpc]\nadress = "/run/x.sock"\n')
    path = str(tmp_path / "config.toml")
    assert message == f'{path}: unknown key "adress" in [grpc]; did you mean "address"?'


def test_unknown_key_in_a_proxy_plugin(tmp_path):
    message = load_error(
        tmp_path,
        """
        version = 2
        [proxy_plugins.stargz]
          type = "snapshot"
          adress = "/run/stargz.sock"
        """,
    )
    assert 'unknown key "adress" in [proxy_plugins.stargz]; did you mean "address"?' in message
    assert str(tmp_path / "config.toml") in message


def test_unknown_key_without_a_near_match_lists_the_valid_keys(tmp_path):
    message = load_error(tmp_path, 'version = 2\n[metrics]\nzzz = 1\n')
    assert 'unknown key "zzz" in [metrics]' in message
    assert "address" in message and "grpc_histogram" in message


def test_unknown_key_in_an_imported_file_names_that_file(tmp_path):
    write(tmp_path / "conf.d" / "bad.toml", "[debug]\nlevle = \"debug\"\n")
    message = load_error(tmp_path, 'version = 2\nimports = ["conf.d/bad.toml"]\n')
    assert message.startswith(str(tmp_path / "conf.d" / "bad.toml") + ": ")
    assert 'unknown key "levle" in [debug]; did you mean "level"?' in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ('oom_score = "high"', "oom_score = 'high': expected int"),
        ("oom_score = true", "oom_score = True: expected int"),
        ("root = 42", "root = 42: expected str"),
        ('disabled_plugins = "io.containerd.snapshotter.v1.btrfs"', "expected list"),
        ('[grpc]\nuid = "root"', "grpc.uid = 'root': expected int"),
        ('[metrics]\ngrpc_histogram = "yes"', "metrics.grpc_histogram = 'yes': expected bool"),
        ('grpc = "/run/x.sock"', "[grpc] must be a table"),
        ("plugins = 3", "[plugins] must be a table"),
        ('[plugins]\n"io.containerd.gc.v1.scheduler" = 3', 'plugins."io.containerd.gc.v1.scheduler" must be a table'),
        ("timeouts = 3", "[timeouts] must be a table"),
        ('proxy_plugins = "x"', "[proxy_plugins] must be a table"),
        ("[proxy_plugins]\nx = 1", "[proxy_plugins.x] must be a table"),
        ("version = \"2\"", "version = '2': expected int"),
    ],
)
def test_wrong_type_is_an_error_naming_file_and_key(tmp_path, text, expected):
    message = load_error(tmp_path, "version = 2\n" + text + "\n" if not text.startswith("version") else text + "\n")
    assert message.startswith(str(tmp_path / "config.toml") + ": ")
    assert expected in message


# -- broken files -------------------------------------------------------------------------


def test_bad_toml_reports_line_and_column(tmp_path):
    message = load_error(tmp_path, 'version = 2\n[grpc]\naddress = "/run/x.sock\n')
    assert message.startswith(str(tmp_path / "config.toml") + ": invalid TOML at line 3, column ")


def test_bad_toml_key_reports_line_and_column(tmp_path):
    message = load_error(tmp_path, 'version = 2\nroot "/x"\n')
    assert "invalid TOML at line 2, column 6" in message


def test_duplicate_key_is_bad_toml(tmp_path):
    message = load_error(tmp_path, 'version = 2\nroot = "/a"\nroot = "/b"\n')
    assert "invalid TOML at line 3" in message


def test_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nope" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == f"config file {path} does not exist"


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))  # a directory
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("text, why", [
    ("version = 1\n", "unsupported config version 1"),
    # a file without a version line says so, not "version 1" it never wrote
    ('root = "/x"\n', "no version set (that is version 1)"),
    ("", "no version set (that is version 1)"),
])
def test_version_1_or_missing_version_is_an_error(tmp_path, text, why):
    message = load_error(tmp_path, text)
    assert message == f"{tmp_path / 'config.toml'}: {why}: set version = 2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('required_plugins = ["cri"]', 'invalid required plugin URI "cri" expect io.containerd.x.vx'),
        (
            'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "btrfs"]',
            'invalid disabled plugin URI "btrfs" expect io.containerd.x.vx',
        ),
        ('[plugins.cri]\nsandbox_image = "x"', 'invalid plugin key URI "cri" expect io.containerd.x.vx'),
    ],
)
def test_short_plugin_names_are_refused_like_containerd(tmp_path, text, expected):
    message = load_error(tmp_path, "version = 2\n" + text + "\n")
    assert message == f"failed to load TOML from {tmp_path / 'config.toml'}: {expected}"


def test_proxy_plugin_needs_a_known_type_and_an_address(tmp_path):
    message = load_error(tmp_path, 'version = 2\n[proxy_plugins.x]\ntype = "runtime"\naddress = "/x.sock"\n')
    assert "proxy plugin 'x'" in message and "unsupported type 'runtime'" in message
    message = load_error(tmp_path, 'version = 2\n[proxy_plugins.x]\ntype = "snapshot"\n')
    assert "proxy plugin 'x': address is required" in message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- decode and decode_plugin_config: the real plugins' config classes ------------------------

OVERLAY = "io.containerd.snapshotter.v1.overlayfs"
GC = "io.containerd.gc.v1.scheduler"
DIFF = "io.containerd.service.v1.diff-service"


def plugin_configs() -> dict[str, type]:
    """Every registered plugin's config class, by URI, as the daemon finds them."""
    from pycontainerd.core import registry

    regs, failures = registry.discover()
    assert failures == []
    return {r.uri: r.config for r in regs if r.config is not None}


def test_plugin_config_defaults_without_a_table(tmp_path):
    from pycontainerd.plugins.snapshotters.overlayfs import Config as OverlayConfig

    cfg = load_text(tmp_path, "version = 2\n")
    assert decode_plugin_config(OverlayConfig, cfg, OVERLAY) == OverlayConfig(root_path="", upperdir_label=False)


def test_plugin_config_overrides(tmp_path):
    from pycontainerd.plugins.services.diff import Config as DiffConfig
    from pycontainerd.plugins.snapshotters.overlayfs import Config as OverlayConfig

    cfg = load_text(
        tmp_path,
        f"""
        version = 2
        [plugins."{OVERLAY}"]
          root_path = "/data/overlay"
          upperdir_label = true
        [plugins."{DIFF}"]
          default = ["walking", "other"]
        """,
    )
    assert decode_plugin_config(OverlayConfig, cfg, OVERLAY) == OverlayConfig(root_path="/data/overlay", upperdir_label=True)
    assert decode_plugin_config(DiffConfig, cfg, DIFF).default == ["walking", "other"]


def test_plugin_config_unknown_key_names_the_file_the_table_came_from(tmp_path):
    from pycontainerd.plugins.snapshotters.overlayfs import Config as OverlayConfig

    imported = write(tmp_path / "conf.d" / "overlay.toml", f'[plugins."{OVERLAY}"]\nupperdir_lable = true\n')
    cfg = load_text(tmp_path, 'version = 2\nimports = ["conf.d/*.toml"]\n')
    with pytest.raises(ConfigError) as info:
        decode_plugin_config(OverlayConfig, cfg, OVERLAY)
    assert str(info.value) == (
        f'{imported}: unknown key "upperdir_lable" in [plugins."{OVERLAY}"]; did you mean "upperdir_label"?'
    )


def test_plugin_config_wrong_type(tmp_path):
    from pycontainerd.plugins.snapshotters.overlayfs import Config as OverlayConfig

    cfg = load_text(tmp_path, f'version = 2\n[plugins."{OVERLAY}"]\nupperdir_label = "yes"\n')
    with pytest.raises(ConfigError) as info:
        decode_plugin_config(OverlayConfig, cfg, OVERLAY)
    assert str(info.value) == (
        f"{tmp_path / 'config.toml'}: plugins.\"{OVERLAY}\".upperdir_label = 'yes': expected bool"
    )


def test_every_containerd_1_6_section_of_a_plugin_we_have_decodes_against_its_real_config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONTAINERD_1_6_DEFAULT)
    cfg = load(str(path))
    configs = plugin_configs()
    ours = sorted(uri for uri in cfg.plugins if uri in configs)
    # containerd's sections for plugins pycontainerd implements under the same
    # URI, and its bolt section, read as our metadata plugin's
    assert ours == [
        GC,
        "io.containerd.metadata.v1.sqlite",
        "io.containerd.monitor.v1.cgroups",
        "io.containerd.runtime.v1.linux",
        "io.containerd.runtime.v2.task",
        DIFF,
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.native",
        OVERLAY,
    ]
    decoded = {uri: dataclasses.asdict(decode_plugin_config(configs[uri], cfg, uri)) for uri in ours}
    assert decoded == {
        GC: {"pause_threshold": 0.02, "deletion_threshold": 0, "mutation_threshold": 100,
             "schedule_delay": "0s", "startup_delay": "100ms"},
        DIFF: {"default": ["walking"]},
        "io.containerd.metadata.v1.sqlite": {"content_sharing_policy": "shared"},
        "io.containerd.runtime.v1.linux": {"shim": "containerd-shim", "runtime": "runc", "runtime_root": "",
                                           "no_shim": False, "shim_debug": False},
        "io.containerd.runtime.v2.task": {"platforms": ["linux/amd64"], "sched_core": False},
        "io.containerd.monitor.v1.cgroups": {"no_prometheus": False},
        "io.containerd.snapshotter.v1.btrfs": {"root_path": ""},
        "io.containerd.snapshotter.v1.native": {"root_path": ""},
        OVERLAY: {"root_path": "", "upperdir_label": False},
    }
    # and every key containerd writes for them is one the class knows (nothing left over)
    for uri in ours:
        assert set(cfg.plugins[uri]) <= {f.name for f in dataclasses.fields(configs[uri])}, uri


def test_every_real_plugin_config_decodes_its_own_defaults_back():
    # what `pycontainerd config default` prints for a plugin is accepted as it is
    for uri, cls in plugin_configs().items():
        plain = configmod._to_plain(cls())
        assert decode(cls, plain, "f.toml", f'plugins."{uri}"') == cls(), uri


@pytest.mark.parametrize(
    "table, expected",
    [
        ('startup_delay = "1 fortnight"',
         "startup_delay = '1 fortnight': invalid duration: time: unknown unit \" fortnight\" in duration \"1 fortnight\""),
        ('schedule_delay = "5"', "schedule_delay = '5': invalid duration: time: missing unit in duration \"5\""),
        ("pause_threshold = 0.51", "pause_threshold = 0.51: out of range: must be in (0, 0.5]"),
        ("pause_threshold = 0", "pause_threshold = 0: out of range: must be in (0, 0.5]"),
        ("pause_threshold = -0.1", "pause_threshold = -0.1: out of range: must be in (0, 0.5]"),
        ("pause_threshold = nan", "pause_threshold = nan: out of range: must be in (0, 0.5]"),
        ("deletion_threshold = -1", "deletion_threshold = -1: out of range: must be >= 0"),
        ("mutation_threshold = -1", "mutation_threshold = -1: out of range: must be >= 0"),
    ],
)
def test_gc_scheduler_values_outside_containerds_ranges_name_file_table_and_key(tmp_path, table, expected):
    from pycontainerd.plugins.gc.scheduler import Config as GCConfig

    cfg = load_text(tmp_path, f'version = 2\n[plugins."{GC}"]\n{table}\n')
    with pytest.raises(ConfigError) as info:
        decode_plugin_config(GCConfig, cfg, GC)
    assert str(info.value) == f'{tmp_path / "config.toml"}: plugins."{GC}".{expected}'


def test_gc_scheduler_edges_of_the_ranges_are_accepted(tmp_path):
    from pycontainerd.plugins.gc.scheduler import Config as GCConfig

    cfg = load_text(
        tmp_path,
        f'version = 2\n[plugins."{GC}"]\npause_threshold = 0.5\ndeletion_threshold = 0\n'
        'mutation_threshold = 0\nschedule_delay = "1h2m3.5s"\nstartup_delay = "0"\n',
    )
    got = decode_plugin_config(GCConfig, cfg, GC)
    assert (got.pause_threshold, got.mutation_threshold, got.schedule_delay) == (0.5, 0, "1h2m3.5s")


def test_decode_nested_dataclass():
    got = decode(Config, {"grpc": {"uid": 3}, "debug": {"level": "debug"}}, "f.toml", "")
    assert (got.grpc.uid, got.grpc.address, got.debug.level) == (3, configmod.DEFAULT_ADDRESS, "debug")


def test_decode_nested_unknown_key_names_the_nested_table():
    with pytest.raises(ConfigError) as info:
        decode(Config, {"grpc": {"adress": "x"}}, "f.toml", "")
    assert str(info.value) == 'f.toml: unknown key "adress" in [grpc]; did you mean "address"?'


def test_decode_refuses_a_non_table():
    with pytest.raises(ConfigError, match=r"f.toml: \[t\] must be a table"):
        decode(configmod.GRPCConfig, ["x"], "f.toml", "t")


def test_decode_does_not_accept_a_bool_for_a_number():
    from pycontainerd.plugins.gc.scheduler import Config as GCConfig

    with pytest.raises(ConfigError, match="expected float"):
        decode(GCConfig, {"pause_threshold": True}, "f.toml", "t")


def test_decoded_config_is_a_fresh_object_each_time(tmp_path):
    from pycontainerd.plugins.services.diff import Config as DiffConfig

    cfg = load_text(tmp_path, "version = 2\n")
    a = decode_plugin_config(DiffConfig, cfg, DIFF)
    a.default.append("x")
    assert decode_plugin_config(DiffConfig, cfg, DIFF).default == ["walking"]
    assert dataclasses.is_dataclass(a)


# -- values checked where they are read --------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('disabled_plugins = ["io.containerd.grpc.v1.events", 3]', "disabled_plugins[1] = 3: expected str"),
        ("required_plugins = [[]]", "required_plugins[0] = []: expected str"),
        ("imports = [1]", "imports[0] = 1: expected str"),
        ("[grpc]\nmax_recv_message_size = 2147483648",
         "grpc.max_recv_message_size = 2147483648: out of range: must be in [1, 2147483647]"),
        ("[grpc]\nmax_send_message_size = -1", "grpc.max_send_message_size = -1: out of range"),
        ("[grpc]\nuid = -1", "grpc.uid = -1: out of range: must be in [0, 4294967294]"),
        ("[grpc]\ngid = 4294967295", "grpc.gid = 4294967295: out of range"),
        ("[ttrpc]\ngid = -2", "ttrpc.gid = -2: out of range"),
        ("[debug]\nuid = -3", "debug.uid = -3: out of range"),
        ('[debug]\nformat = "xml"', "debug.format = 'xml': must be one of \"\", \"text\", \"json\""),
        ('[timeouts]\n"io.containerd.timeout.shim.load" = "3 sec"',
         'timeouts."io.containerd.timeout.shim.load" = \'3 sec\': invalid duration'),
        ('[timeouts]\n"io.containerd.timeout.shim.load" = 3', "expected a duration string"),
        ('[stream_processors."p"]\nretruns = "x"', 'unknown key "retruns" in [stream_processors."p"]'),
        ('[stream_processors."p"]\nargs = [1]', 'stream_processors."p".args[0] = 1: expected str'),
    ],
)
def test_bad_value_names_file_and_key(tmp_path, text, expected):
    message = load_error(tmp_path, "version = 2\n" + text + "\n")
    assert message.startswith(str(tmp_path / "config.toml") + ": "), message
    assert expected in message, message


def test_log_level_in_any_case_format_as_written(tmp_path):
    # containerd parses the level with logrus (any case) and compares the format as it is
    cfg = load_text(tmp_path, 'version = 2\n[debug]\nlevel = "DEBUG"\nformat = "json"\n')
    assert (cfg.debug.level, cfg.debug.format) == ("DEBUG", "json")
    assert "debug.format = 'JSON': must be one of" in load_error(tmp_path, 'version = 2\n[debug]\nformat = "JSON"\n')


def test_a_huge_bad_value_is_not_quoted_whole(tmp_path):
    message = load_error(tmp_path, "version = 2\n[debug]\nlevel = \"" + "x" * 100_000 + "\"\n")
    assert len(message) < 400 and "debug.level" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[grpc]\naddress = ""', "[grpc] address is empty"),
        ('[grpc]\naddress = "tcp://0.0.0.0:1"', "[grpc] address 'tcp://0.0.0.0:1' is not a path"),
        ('[grpc]\ntcp_address = "0.0.0.0:1"', "[grpc] tcp_address '0.0.0.0:1': serving on TCP is not supported"),
    ],
)
def test_grpc_address_must_be_a_socket_path(tmp_path, text, expected):
    message = load_error(tmp_path, "version = 2\n" + text + "\n")
    assert message.startswith(f"failed to load TOML from {tmp_path / 'config.toml'}: {expected}"), message


def test_binary_garbage_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"version = 2\n\xff\xfe\x00\x01")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == f"{path}: not a TOML file: invalid UTF-8 at byte 12"


# -- what containerd knows but pycontainerd does not act on ------------------------------------


def test_containerd_default_sets_two_things_pycontainerd_does_not_act_on(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONTAINERD_1_6_DEFAULT)
    assert load(str(path)).inert_settings() == ["stream_processors", 'timeouts."io.containerd.timeout.bolt.open"']


def test_inert_settings_are_named_once_each(tmp_path):
    write(tmp_path / "more.toml", "oom_score = -500\n[cgroup]\npath = \"/b\"\n")
    cfg = load_text(
        tmp_path,
        """
        version = 2
        imports = ["more.toml"]
        oom_score = -999
        plugin_dir = "/opt/plugins"
        [grpc]
          uid = 1000
          tcp_tls_cert = "/etc/cert.pem"
        [ttrpc]
          address = "/run/x.ttrpc"
        [debug]
          level = "debug"
          address = "/run/debug.sock"
        [metrics]
          address = "127.0.0.1:1338"
        [cgroup]
          path = "/a"
        """,
    )
    assert cfg.inert_settings() == [
        "plugin_dir", "oom_score", "grpc.tcp_tls_cert", "cgroup.path",
    ]
    assert load_text(tmp_path, "version = 2\n").inert_settings() == []
