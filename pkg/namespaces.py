"""Namespaces as the APIs carry them."""

# the request metadata key naming the namespace (containerd's
# namespaces.GRPCHeader), and its ttrpc counterpart
GRPC_HEADER = "containerd-namespace"
TTRPC_HEADER = "containerd-namespace-ttrpc"
