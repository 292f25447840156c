"""Contracts and libraries: what more than one plugin (or the client)
needs, defined once. Nothing here registers a plugin or serves gRPC."""
