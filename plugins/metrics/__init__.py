"""The metrics plugin: the daemon's Prometheus registry, the [metrics] endpoint, gRPC request metrics."""
