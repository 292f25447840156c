"""Content store plugins (io.containerd.content.v1)."""
