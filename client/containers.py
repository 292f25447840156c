"""Containers from the client side: the Containers API (records), and
creating a container from an image the way containerd's client does
(NewContainer with WithImage, WithImageConfigLabels, WithSnapshotter,
WithNewSnapshot, WithImageStopSignal, WithRuntime, WithSpec), so that a
container pyctr creates is the container ctr creates for the same flags.

    with Client(address) as client:
        c = create_container(client, "c1", "docker.io/library/busybox:latest", ["echo", "hi"])

Errors come back as errdefs classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from google.protobuf import any_pb2, field_mask_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, labels as labelrules, mount as mountpkg, platforms, timestamps
from pycontainerd.pkg.oci import spec as ocispec

from .client import _errors
from .content import ContentClient
from .image_unpack import chain_ids, manifest_for, read_json, resolve_snapshotter, unpack
from .images import Images
from .leases import TemporaryLease
from .snapshots import Snapshots

DEFAULT_RUNTIME = "io.containerd.runc.v2"  # containerd's defaults.DefaultRuntime on Linux
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
STOP_SIGNAL_LABEL = "io.containerd.image.config.stop-signal"
DEFAULT_STOP_SIGNAL = "SIGTERM"


@dataclass
class Container:
    """A container record, as containerd's containers.Container."""

    id: str
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    runtime: str = ""
    runtime_options: any_pb2.Any | None = None
    spec: any_pb2.Any | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: int = 0  # nanoseconds
    updated_at: int = 0
    extensions: dict[str, any_pb2.Any] = field(default_factory=dict)

    def spec_dict(self) -> dict:
        """The OCI spec stored with the container (JSON in an Any)."""
        if self.spec is None or not self.spec.value:
            return {}
        return json.loads(self.spec.value)


def container_from_pb(p: pb.Container) -> Container:
    return Container(
        id=p.id, labels=dict(p.labels), image=p.image, runtime=p.runtime.name,
        runtime_options=p.runtime.options if p.runtime.HasField("options") else None,
        spec=p.spec if p.HasField("spec") else None, snapshotter=p.snapshotter, snapshot_key=p.snapshot_key,
        created_at=timestamps.from_pb(p.created_at), updated_at=timestamps.from_pb(p.updated_at),
        extensions={k: v for k, v in p.extensions.items()},
    )


def container_to_pb(c: Container) -> pb.Container:
    p = pb.Container(id=c.id, labels=c.labels, image=c.image, snapshotter=c.snapshotter,
                     snapshot_key=c.snapshot_key)
    p.runtime.name = c.runtime
    if c.runtime_options is not None:
        p.runtime.options.CopyFrom(c.runtime_options)
    if c.spec is not None:
        p.spec.CopyFrom(c.spec)
    for k, v in c.extensions.items():
        p.extensions[k].CopyFrom(v)
    return p


class Containers:
    """The Containers service."""

    def __init__(self, client: Any, lease: str = ""):
        self.client = client
        self.lease = lease
        self.stub = pb_grpc.ContainersStub(client.channel)

    @_errors
    def get(self, container_id: str) -> Container:
        r = self.client._call(self.stub.Get, pb.GetContainerRequest(id=container_id))
        return container_from_pb(r.container)

    @_errors
    def list(self, *filters: str) -> list[Container]:
        r = self.client._call(self.stub.List, pb.ListContainersRequest(filters=list(filters)))
        return [container_from_pb(c) for c in r.containers]

    @_errors
    def create(self, c: Container) -> Container:
        r = self.client._call(self.stub.Create, pb.CreateContainerRequest(container=container_to_pb(c)),
                              lease=self.lease)
        return container_from_pb(r.container)

    @_errors
    def update(self, c: Container, *paths: str) -> Container:
        req = pb.UpdateContainerRequest(container=container_to_pb(c))
        if paths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
        return container_from_pb(self.client._call(self.stub.Update, req).container)

    @_errors
    def delete(self, container_id: str) -> None:
        self.client._call(self.stub.Delete, pb.DeleteContainerRequest(id=container_id))


def set_labels(client: Any, container_id: str, labels: dict[str, str]) -> dict[str, str]:
    """containerd's container.SetLabels: an update masked to each key (an
    empty value removes it); returns the container's labels after it."""
    c = Container(id=container_id, labels={k: v for k, v in labels.items() if v})
    return Containers(client).update(c, *[f"labels.{k}" for k in labels]).labels


def delete_container(client: Any, container_id: str, cleanup_snapshot: bool = True) -> None:
    """container.Delete(WithSnapshotCleanup): the record, then its snapshot
    (already gone is fine)."""
    c = Containers(client).get(container_id)
    Containers(client).delete(container_id)
    if cleanup_snapshot and c.snapshot_key:
        if not c.snapshotter:
            raise errdefs.InvalidArgument("container.Snapshotter must be set to cleanup rootfs snapshot")
        with contextlib.suppress(errdefs.NotFound):
            Snapshots(client, c.snapshotter).remove(c.snapshot_key)


# -- an image's config, read as the client reads it ---------------------------------------

@dataclass
class ImageConfig:
    name: str
    labels: dict[str, str]  # the image record's labels
    config: dict            # the image config JSON
    chain_id: str           # the top of its unpacked rootfs


def image_config(client: Any, name: str, matcher: platforms.MatchComparer | None = None) -> ImageConfig:
    image = Images(client).get(name)
    content = ContentClient(client)
    manifest = manifest_for(content, image.target, matcher or platforms.default())
    if manifest.config.media_type not in ("application/vnd.oci.image.config.v1+json",
                                          "application/vnd.docker.container.image.v1+json"):
        raise errdefs.Unknown(f"unknown image config media type {manifest.config.media_type}")
    config = read_json(content, manifest.config)
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") or [] if isinstance(rootfs, dict) else []
    chain = chain_ids(list(diff_ids))
    return ImageConfig(image.name, dict(image.labels), config, chain[-1] if chain else "")


def ensure_unpacked(client: Any, name: str, snapshotter: str) -> ImageConfig:
    """image.IsUnpacked, else image.Unpack (under its own lease)."""
    ic = image_config(client, name)
    try:
        Snapshots(client, snapshotter).stat(ic.chain_id)
    except errdefs.NotFound:
        with TemporaryLease(client) as lease:
            unpack(client, Images(client).get(name), snapshotter, lease)
    return ic


@contextlib.contextmanager
def temp_mount(mounts: list[mountpkg.Mount]) -> Iterator[str]:
    """containerd's mount.WithTempMount: the mounts on a fresh private
    directory (an overlay read-only, as tryReadonlyMounts makes it),
    unmounted and removed afterwards."""
    mounts = [mountpkg.Mount(m.type, m.source, list(m.options)) for m in mounts]
    if len(mounts) == 1 and mounts[0].type == "overlay":
        mounts[0].options.append("ro")
    root = tempfile.mkdtemp(prefix="containerd-mount")
    try:
        mountpkg.mount_all(mounts, root)
        try:
            yield root
        finally:
            mountpkg.unmount_all(root)
    finally:
        os.rmdir(root)


def runc_options(binary_name: str = "") -> any_pb2.Any:
    """ctr's runtime options for io.containerd.runc.v2 (runc's Options,
    BinaryName set by --runc-binary)."""
    from pycontainerd.api.runtime.runc.options import oci_pb2

    return any_pb2.Any(type_url=RUNC_OPTIONS_TYPE,
                       value=oci_pb2.Options(binary_name=binary_name).SerializeToString())


def _valid_image_labels(image_labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for k, v in image_labels.items():
        try:
            labelrules.validate_labels({k: v})
        except errdefs.ContainerdError:
            continue  # ctr warns and leaves it out
        out[k] = v
    return out


def create_container(
    client: Any,
    container_id: str,
    image: str = "",
    args: Iterable[str] = (),
    *,
    spec_opts: Iterable[ocispec.SpecOpt] | None = None,
    labels: dict[str, str] | None = None,
    snapshotter: str = "",
    snapshot_labels: dict[str, str] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    runtime_options: any_pb2.Any | None = None,
    rootfs: bool = False,
) -> Container:
    """ctr's NewContainer: from `image` (unpacked if need be: a snapshot
    `container_id` is prepared on its rootfs) or, with `rootfs`, from a
    host directory that `spec_opts` name (spec.with_rootfs_path). The spec
    is `spec_opts` applied to an empty spec (the first is normally
    spec.with_default_spec()), then the labels as annotations;
    WITH_IMAGE_CONFIG among them applies the image's config there. Without
    `spec_opts`: containerd's default spec and the image's config; `args`,
    when given, replace the image's command."""
    labels = dict(labels or {})
    if spec_opts is None:
        spec_opts = [ocispec.with_default_spec(), WITH_IMAGE_CONFIG]
    spec_opts = [*spec_opts, *([ocispec.with_process_args(*args)] if args else [])]
    c = Container(id=container_id, runtime=runtime, runtime_options=runtime_options)
    with TemporaryLease(client) as lease:
        ctx = ocispec.SpecContext(client.namespace, container_id)
        if rootfs:
            c.labels = labels
            sn = None
        else:
            sn_name = resolve_snapshotter(client, snapshotter)
            ic = ensure_unpacked(client, image, sn_name)
            cfg = ic.config.get("config") or {}
            c.image = ic.name
            c.labels = dict(cfg.get("Labels") or {})
            c.labels.update({**_valid_image_labels(ic.labels), **labels})
            c.snapshotter = sn_name
            sn = Snapshots(client, sn_name, lease)
            sn.prepare(container_id, ic.chain_id, snapshot_labels or {})
            c.snapshot_key = container_id
            c.labels[STOP_SIGNAL_LABEL] = cfg.get("StopSignal") or DEFAULT_STOP_SIGNAL

            def with_rootfs(fn: Callable[[str], Any]) -> Any:
                with temp_mount(Snapshots(client, sn_name).mounts(container_id)) as root:
                    return fn(root)
            ctx.with_rootfs = with_rootfs
        try:
            opts = [o(ic.config) if isinstance(o, ImageConfigOpt) else o for o in spec_opts] if sn else \
                [o for o in spec_opts if not isinstance(o, ImageConfigOpt)]
            s: dict = {}
            ocispec.apply(s, ctx, *opts, ocispec.with_annotations(labels))
            c.spec = any_pb2.Any(type_url=ocispec.SPEC_TYPE_URL, value=ocispec.dumps(s))
            return Containers(client, lease).create(c)
        except BaseException:
            if sn is not None:
                with contextlib.suppress(errdefs.ContainerdError):
                    sn.remove(container_id)
            raise


class ImageConfigOpt:
    """A spec option that needs the image's config: in `spec_opts` it
    stands where ctr applies WithImageConfig, and gets the config then."""

    def __init__(self, make: Callable[[dict], ocispec.SpecOpt]):
        self.make = make

    def __call__(self, config: dict) -> ocispec.SpecOpt:
        return self.make(config)


WITH_IMAGE_CONFIG = ImageConfigOpt(ocispec.with_image_config)
