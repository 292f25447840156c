"""Media types, spelled exactly as containerd's images package and the OCI
image spec spell them."""

from __future__ import annotations

# Docker schema 2
DOCKER_SCHEMA2_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_SCHEMA2_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_SCHEMA2_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA2_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA2_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# OCI image spec v1
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NON_DISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NON_DISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NON_DISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

MANIFESTS = frozenset({DOCKER_SCHEMA2_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_SCHEMA2_MANIFEST_LIST, OCI_INDEX})
CONFIGS = frozenset({DOCKER_SCHEMA2_CONFIG, OCI_CONFIG})

# What a resolver asks a registry for, best first (containerd's resolver
# sends these four, then `*/*`).
MANIFEST_ACCEPT = (DOCKER_SCHEMA2_MANIFEST, DOCKER_SCHEMA2_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, "*/*")


def is_layer(media_type: str) -> bool:
    """containerd's IsLayerType: any OCI layer type, or a Docker layer type
    once its `+` suffixes are stripped."""
    if media_type.startswith("application/vnd.oci.image.layer."):
        return True
    return media_type.split("+", 1)[0] in (DOCKER_SCHEMA2_LAYER, DOCKER_SCHEMA2_LAYER_GZIP,
                                           DOCKER_SCHEMA2_LAYER_FOREIGN, DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP)


def is_non_distributable(media_type: str) -> bool:
    return media_type.startswith(("application/vnd.oci.image.layer.nondistributable.",
                                  "application/vnd.docker.image.rootfs.foreign."))


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_config(media_type: str) -> bool:
    return media_type in CONFIGS
