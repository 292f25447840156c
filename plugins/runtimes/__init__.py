"""Runtime plugins: v1 (containerd-shim) and v2 (shims over ttrpc), and the
state-directory helpers both use."""
