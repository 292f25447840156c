"""Runtime plugins: v2 (shims over ttrpc)."""
