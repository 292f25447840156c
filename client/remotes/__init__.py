"""Talking to registries (OCI distribution): which endpoints serve a
registry (hosts.py), how to authorise (auth.py), and resolve, fetch and
push (registry.py)."""

from .hosts import RegistryHost, configure_hosts
from .registry import Options, Registry, static_credentials

__all__ = ["Options", "Registry", "RegistryHost", "configure_hosts", "static_credentials"]
