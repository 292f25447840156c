"""`oci spec`: containerd's default OCI runtime spec, printed as ctr
prints it (Go's indented JSON, byte for byte). Needs no daemon."""

from __future__ import annotations

import argparse
import os

from pycontainerd.client.client import DEFAULT_NAMESPACE, NAMESPACE_ENV
from pycontainerd.pkg.oci import spec


def cmd_spec(_client: None, args: argparse.Namespace) -> int:
    # as ctr: the default spec of a container with no id, in the command's namespace
    print(spec.to_json(spec.default_spec(args.namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE), indent=True))
    return 0


def register(sub) -> None:
    oci = sub.add_parser("oci", help="OCI tools").add_subparsers(dest="oci_command", required=True)
    oci.add_parser("spec", help="see the output of the default OCI spec").set_defaults(fn=cmd_spec, no_client=True)
