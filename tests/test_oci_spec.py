"""pkg/oci/spec.py and pkg/oci/userdb.py: containerd's default spec, its
spec options, Go's JSON encoding, and user lookups confined to a rootfs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pycontainerd.pkg.oci import spec
from pycontainerd.pkg.oci.userdb import UserDBError, root_path

CTR = "/usr/bin/ctr"


@pytest.mark.skipif(not os.access(CTR, os.X_OK), reason="ctr is not installed")
@pytest.mark.parametrize("namespace", ["default", "other-ns"])
def test_default_spec_is_ctrs_byte_for_byte(namespace):
    theirs = subprocess.run([CTR, "-n", namespace, "oci", "spec"], capture_output=True, check=True).stdout
    assert (spec.to_json(spec.default_spec(namespace), indent=True) + "\n").encode() == theirs


def test_cgroups_path_is_namespace_then_id():
    assert spec.default_spec("ns1", "c1")["linux"]["cgroupsPath"] == "/ns1/c1"


def test_env_merge_replaces_removes_and_appends():
    assert spec.replace_or_append_env(["A=1", "B=2", "C=3"], ["B=20", "C", "D=4"]) == ["A=1", "B=20", "D=4"]


def test_image_config_env_args_cwd_and_spec_env_wins(tmp_path):
    ctx = spec.SpecContext("default", "c1")
    s = spec.generate(ctx, spec.with_env(["X=from-flag"]))
    s["root"]["path"] = str(tmp_path)  # no passwd: root user, gid 0
    config = {"config": {"Env": ["PATH=/bin", "X=image"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
                         "WorkingDir": "/work"}}
    spec.apply(s, ctx, spec.with_image_config(config))
    assert s["process"]["env"] == ["PATH=/bin", "X=from-flag"]
    assert s["process"]["args"] == ["/bin/sh", "-c", "true"]
    assert s["process"]["cwd"] == "/work"
    assert s["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}


def _rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:other\n")
    return root


@pytest.mark.parametrize("user,expected", [
    ("app", (1000, 1001, [1001])),
    ("1000", (1000, 1001, [1001])),
    ("4242", (4242, 0, [0])),           # no such user: gid 0
    ("app:wheel", (1000, 10, [10])),
    ("1000:1000", (1000, 1000, [1000])),
    ("0:app", (0, 1001, [1001])),
])
def test_with_user_looks_names_up_in_the_rootfs(tmp_path, user, expected):
    root = _rootfs(tmp_path)
    s = spec.generate(spec.SpecContext("default", "c1"), spec.with_rootfs_path(str(root)), spec.with_user(user))
    u = s["process"]["user"]
    assert (u["uid"], u["gid"], u["additionalGids"]) == expected


def test_image_user_gets_its_supplementary_groups(tmp_path):
    root = _rootfs(tmp_path)
    ctx = spec.SpecContext("default", "c1")
    s = spec.generate(ctx, spec.with_rootfs_path(str(root)))
    spec.apply(s, ctx, spec.with_image_config({"config": {"User": "app"}}))
    assert s["process"]["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [1001, 10]}


def test_unknown_user_name_is_an_error(tmp_path):
    root = _rootfs(tmp_path)
    with pytest.raises(UserDBError, match="no users found"):
        spec.generate(spec.SpecContext("default"), spec.with_rootfs_path(str(root)), spec.with_user("nobody"))


def test_passwd_symlinked_out_of_the_rootfs_is_read_inside_it(tmp_path):
    """An image's /etc/passwd linking to a host file (absolute, or through
    ..) resolves inside the rootfs: the host's file is never read."""
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("../../../../../../" + str(outside))
    assert root_path(str(root), "/etc/passwd") == str(root) + str(outside)
    with pytest.raises(UserDBError):
        spec.generate(spec.SpecContext("default"), spec.with_rootfs_path(str(root)), spec.with_user("evil"))
    os.unlink(root / "etc" / "passwd")
    (root / "etc" / "passwd").symlink_to(str(outside))
    with pytest.raises(UserDBError):
        spec.generate(spec.SpecContext("default"), spec.with_rootfs_path(str(root)), spec.with_user("evil"))


def test_symlink_loop_is_refused(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(OSError):
        spec.generate(spec.SpecContext("default"), spec.with_rootfs_path(str(root)), spec.with_user("x"))


@pytest.mark.parametrize("flag,expected", [
    ("type=bind,src=/srv,dst=/host,options=rbind:ro",
     {"destination": "/host", "type": "bind", "source": "/srv", "options": ["rbind", "ro"]}),
    ('type=bind,"source=/a,b",destination=/c', {"destination": "/c", "type": "bind", "source": "/a,b"}),
])
def test_mount_flag_as_ctr_parses_it(flag, expected):
    assert spec.parse_mount_flag(flag) == expected


@pytest.mark.parametrize("flag,message", [
    ("type=bind,src", "expected key=val"),
    ("type=bind,mode=ro", 'mount option "mode" not supported'),
])
def test_bad_mount_flag(flag, message):
    with pytest.raises(spec.SpecError, match=message):
        spec.parse_mount_flag(flag)


def test_json_is_gos_field_order_and_escaping():
    ctx = spec.SpecContext("default", "c1")
    s = spec.generate(ctx, spec.with_process_args("/bin/echo", "<a&b>"), spec.with_tty,
                      spec.with_memory_limit(0), spec.with_annotations({"z": "1", "a": "\x08"}))
    text = spec.to_json(s)
    assert text.startswith('{"ociVersion":"1.0.2-dev","process":{"terminal":true,"user":')
    assert '"args":["/bin/echo","\\u003ca\\u0026b\\u003e"]' in text
    assert '"annotations":{"a":"\\u0008","z":"1"}' in text
    assert '"memory":{"limit":0}' in text  # a pointer to zero is written, as Go does
    assert json.loads(text)["process"]["env"] == ["TERM=xterm"]


def test_host_network_drops_the_namespace_and_binds_host_files():
    s = spec.generate(spec.SpecContext("default", "c1"), *spec.with_host_network())
    assert "network" not in [n["type"] for n in s["linux"]["namespaces"]]
    assert [m["destination"] for m in s["mounts"][-2:]] == ["/etc/hosts", "/etc/resolv.conf"]
    assert s["process"]["env"][0].startswith("HOSTNAME=")


def test_current_capabilities_are_named_in_bit_order(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000200003\n")
    assert spec.current_capabilities(str(status)) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN"]


def test_privileged_drops_masks_and_makes_sysfs_writable():
    s = spec.generate(spec.SpecContext("default", "c1"), spec.with_privileged, spec.with_all_devices_allowed)
    assert "maskedPaths" not in s["linux"] and "readonlyPaths" not in s["linux"]
    assert [m for m in s["mounts"] if m["type"] == "sysfs"][0]["options"][-1] == "rw"
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
