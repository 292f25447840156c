"""Leases as the API carries them."""

# the request metadata key that names the caller's lease (containerd's
# leases.GRPCHeader): what a client creates or prepares under it is held
# by that lease until it is deleted
GRPC_HEADER = "containerd-lease"
