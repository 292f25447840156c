"""Task monitors (io.containerd.monitor.v1)."""
