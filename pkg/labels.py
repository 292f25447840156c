"""Label rules every labelled object follows: containerd's labels.Validate
(each label, key and value together, at most MAX_LABEL_SIZE bytes) and the
per-object limits this daemon adds. The metadata store applies them to
whatever it stores; services check a request's limits before any work."""

from __future__ import annotations

from . import errdefs

MAX_LABEL_SIZE = 4096  # one label, key and value together, in bytes: containerd's
# Per object (ours, generous: an image's content carries one GC label per
# layer or manifest, tens to a few hundred): how many labels, and how many
# bytes of keys and values in all.
MAX_LABELS = 4096
MAX_LABELS_BYTES = 1 << 20


def validate_labels(labels: dict[str, str]) -> None:
    """containerd's labels.Validate on each label (key and value together at
    most 4096 bytes), after the per-object limits below."""
    check_label_limits(labels)
    for k, v in labels.items():
        kb = k.encode("utf-8", "surrogatepass")
        if len(kb) + len(v.encode("utf-8", "surrogatepass")) > MAX_LABEL_SIZE:
            shown = kb[:10].decode("utf-8", "replace")
            raise errdefs.InvalidArgument(
                f"label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {shown}"
            )


def check_label_limits(labels: dict[str, str], paths: list[str] | tuple[str, ...] = ()) -> None:
    """The per-object limits (ours: containerd has none, and one request
    with 100k labels held the metadata thread, every namespace, for
    seconds): at most MAX_LABELS labels and MAX_LABELS_BYTES bytes of keys
    and values. Cheap, so callers check a request before any metadata work."""
    if len(labels) > MAX_LABELS or len(paths) > MAX_LABELS:
        if len(paths) > len(labels):
            raise errdefs.InvalidArgument(f"too many update paths: {len(paths)} (at most {MAX_LABELS})")
        raise errdefs.InvalidArgument(f"too many labels: {len(labels)} (at most {MAX_LABELS} per object)")
    total = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
                for k, v in labels.items())
    if total > MAX_LABELS_BYTES:
        raise errdefs.InvalidArgument(
            f"labels too large: {total} bytes of keys and values (at most {MAX_LABELS_BYTES} per object)"
        )


def update_by_paths(current: dict[str, str], new: dict[str, str], paths: list[str] | tuple[str, ...],
                    what: str) -> dict[str, str]:
    """containerd's label update by field paths, for any object: `labels`
    replaces them all, `labels.<k>` sets (or, empty, removes) one; no paths
    means replace. Empty values are dropped. `what` names the object in the
    error for any other path, e.g. 'snapshot "k1"'."""
    labels = dict(current)
    if not paths:
        labels = dict(new)
    for path in paths:
        if path.startswith("labels."):
            key = path[len("labels."):]
            labels[key] = new.get(key, "")
        elif path == "labels":
            labels = dict(new)
        else:
            raise errdefs.InvalidArgument(f"cannot update {errdefs.quote(path)} field on {what}")
    return {k: v for k, v in labels.items() if v}
