"""Images in the metadata store, as containerd's metadata/images.go keeps them.

An image is a namespaced row in `images` (name, the target's digest, media
type and size, created/updated times), its labels in `labels` (kind
'image') and its target's annotations in `image_annotations`. The garbage
collector treats every image as a root: its target digest and the content
or snapshots its `containerd.io/gc.ref.*` labels name stay (plugins/
metadata/gc.py reads `target_digest` and the labels directly).

Validation, update field paths and error wording follow containerd's, so
the real `ctr` prints what it would print against containerd. Each call is
one sqlite transaction; List filters are matched off the database thread.
"""

from __future__ import annotations

import sqlite3
import time

from pycontainerd.core import filters
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.digest import digest_error
from pycontainerd.pkg.imagestore import Image, adapt_image
from pycontainerd.pkg.labels import check_label_limits, validate_labels
from pycontainerd.pkg.oci.descriptor import Descriptor

from .sqlite import DB, ensure_namespace, get_labels

KIND = "image"  # the kind of an image's rows in the labels table


def _not_found(name: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"image {errdefs.quote(name)}")


def validate_image(image: Image) -> None:
    """containerd's validateImage: a name, valid labels, and a target with a
    valid digest, a positive size and a media type."""
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    try:
        validate_labels(image.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"image.Labels: {exc.message}") from None
    target = image.target
    why = digest_error(target.digest)
    if why:
        raise errdefs.InvalidArgument(f"Target.Digest {errdefs.quote(target.digest)} invalid: {why}")
    if target.size <= 0:
        raise errdefs.InvalidArgument("Target.Size must be greater than zero")
    if not target.media_type:
        raise errdefs.InvalidArgument("Target.MediaType must be set")


def apply_paths(current: Image, new: Image, paths: list[str] | tuple[str, ...]) -> Image:
    """containerd's image update by field paths: `labels` and `labels.<k>`,
    `annotations` and `annotations.<k>` (the target's), and `target` (the
    whole descriptor, annotations included). No paths: everything but the
    creation time comes from `new`. Empty values are dropped later, as
    containerd drops them when it writes."""
    if not paths:
        return Image(name=current.name, target=_copy(new.target), labels=dict(new.labels),
                     created_at=current.created_at)
    labels = dict(current.labels)
    target = _copy(current.target)
    for path in paths:
        if path.startswith("labels."):
            key = path[len("labels."):]
            labels[key] = new.labels.get(key, "")
        elif path.startswith("annotations."):
            key = path[len("annotations."):]
            target.annotations[key] = new.target.annotations.get(key, "")
        elif path == "labels":
            labels = dict(new.labels)
        elif path == "target":
            target = _copy(new.target)
        elif path == "annotations":
            target.annotations = dict(new.target.annotations)
        else:
            raise errdefs.InvalidArgument(
                f"cannot update {errdefs.quote(path)} field on image {errdefs.quote(current.name)}"
            )
    return Image(name=current.name, target=target, labels=labels, created_at=current.created_at)


def _copy(d: Descriptor) -> Descriptor:
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


def _read(conn: sqlite3.Connection, namespace: str, name: str) -> Image | None:
    row = conn.execute(
        "SELECT target_media_type, target_digest, target_size, created_at, updated_at FROM images "
        "WHERE namespace = ? AND name = ?",
        (namespace, name),
    ).fetchone()
    if row is None:
        return None
    media_type, dgst, size, created, updated = row
    annotations = dict(conn.execute(
        "SELECT key, value FROM image_annotations WHERE namespace = ? AND image = ? ORDER BY key", (namespace, name)
    ).fetchall())
    return Image(name=name, target=Descriptor(media_type, dgst, size, annotations),
                 labels=get_labels(conn, namespace, KIND, name), created_at=created, updated_at=updated)


def _write(conn: sqlite3.Connection, namespace: str, image: Image) -> Image:
    """Store `image` (its row exists), replacing its labels and annotations;
    empty values are not stored. Returns what was stored."""
    labels = {k: v for k, v in image.labels.items() if v}
    annotations = {k: v for k, v in image.target.annotations.items() if v}
    t = image.target
    conn.execute(
        "UPDATE images SET target_media_type = ?, target_digest = ?, target_size = ?, created_at = ?, "
        "updated_at = ? WHERE namespace = ? AND name = ?",
        (t.media_type, t.digest, t.size, image.created_at, image.updated_at, namespace, image.name),
    )
    _delete_rows(conn, namespace, image.name)
    conn.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?)",
                     [(namespace, KIND, image.name, k, v) for k, v in labels.items()])
    conn.executemany("INSERT INTO image_annotations VALUES (?, ?, ?, ?)",
                     [(namespace, image.name, k, v) for k, v in annotations.items()])
    return Image(name=image.name, target=Descriptor(t.media_type, t.digest, t.size, dict(sorted(annotations.items()))),
                 labels=dict(sorted(labels.items())), created_at=image.created_at, updated_at=image.updated_at)


def _delete_rows(conn: sqlite3.Connection, namespace: str, name: str) -> None:
    """An image's labels and annotations (not its row)."""
    conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?", (namespace, KIND, name))
    conn.execute("DELETE FROM image_annotations WHERE namespace = ? AND image = ?", (namespace, name))


class ImageStore:
    """containerd's images.Store over the metadata database; every call
    names its namespace."""

    def __init__(self, db: DB):
        self.db = db

    async def get(self, namespace: str, name: str) -> Image:
        def tx(conn: sqlite3.Connection) -> Image:
            image = _read(conn, namespace, name)
            if image is None:
                raise _not_found(name)
            return image

        return await self.db.view(tx)

    async def list(self, namespace: str, *filter_strings: str) -> list[Image]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def tx(conn: sqlite3.Connection) -> list[Image]:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM images WHERE namespace = ? ORDER BY name", (namespace,)
            )]
            return [image for image in (_read(conn, namespace, n) for n in names) if image is not None]

        # matched off the database thread: a heavy filter must not hold it
        return await filters.select(flt, await self.db.view(tx), adapt_image)

    async def create(self, namespace: str, image: Image) -> Image:
        check_label_limits(image.labels)
        check_label_limits(image.target.annotations)
        validate_image(image)

        def tx(conn: sqlite3.Connection) -> Image:
            ensure_namespace(conn, namespace)
            inserted = conn.execute(
                "INSERT OR IGNORE INTO images (namespace, name) VALUES (?, ?)", (namespace, image.name)
            ).rowcount == 1
            if not inserted:
                raise errdefs.AlreadyExists(f"image {errdefs.quote(image.name)}")
            now = time.time_ns()
            return _write(conn, namespace, Image(image.name, image.target, image.labels, now, now))

        return await self.db.update(tx)

    async def update(self, namespace: str, image: Image, paths: list[str] | tuple[str, ...] = ()) -> Image:
        if not image.name:
            raise errdefs.InvalidArgument("image name is required for update")
        check_label_limits(image.labels, paths)
        check_label_limits(image.target.annotations)

        def tx(conn: sqlite3.Connection) -> Image:
            current = _read(conn, namespace, image.name)
            if current is None:
                raise _not_found(image.name)
            updated = apply_paths(current, image, paths)
            validate_image(updated)
            updated.updated_at = time.time_ns()
            return _write(conn, namespace, updated)

        return await self.db.update(tx)

    async def delete(self, namespace: str, name: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (namespace, name)).rowcount == 0:
                raise _not_found(name)
            _delete_rows(conn, namespace, name)

        await self.db.update(tx)
