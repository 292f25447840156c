"""The OCI image-spec types pycontainerd handles (descriptors today)."""
