"""Image types shared by the daemon's Images service and the client's
registry, pull and import code: media types, manifests and indexes."""
