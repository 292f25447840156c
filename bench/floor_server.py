"""The least a Python gRPC daemon can do: asyncio + grpc.aio serving one
Version RPC, nothing else. bench/startup.py times it beside pycontainerd and
containerd so the ready-time ratio can be read against the runtime's floor,
and reads its idle RSS for the same reason.

With --api it also carries what any server of containerd's API in Python
must load: every gRPC service pycontainerd serves (their generated modules,
messages and descriptors) registered with its generated servicer (which
answers UNIMPLEMENTED), the health service, and the event and type
messages the daemon publishes and returns. That is the RSS floor of the
API alone, before any plugin, store or log.

    python bench/floor_server.py [--api] --config F   (reads [grpc] address from F)
"""

import asyncio
import sys
import tomllib

import grpc

from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc


class Version(version_pb2_grpc.VersionServicer):
    async def Version(self, request, context):
        return version_pb2.VersionResponse(version="floor")


def add_api(server) -> int:
    """Import and register every containerd gRPC service under api/services
    (their servicers answer UNIMPLEMENTED), the health service, and import the
    event and type messages; the number of services registered."""
    import importlib  # here, not above: the bare floor loads nothing it does not use
    from pathlib import Path

    from grpc_health.v1 import health, health_pb2_grpc

    api = Path(__file__).resolve().parent.parent / "api"

    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    services = 1
    for path in sorted((api / "services").glob("*/v1/*_pb2_grpc.py")):
        if path.parts[-3] in ("version", "ttrpc"):  # Version is served above; ttrpc's is not gRPC
            continue
        module = importlib.import_module("pycontainerd." + ".".join(path.relative_to(api.parent).with_suffix("").parts))
        for name in dir(module):
            if name.startswith("add_") and name.endswith("Servicer_to_server"):
                servicer = getattr(module, name.removeprefix("add_").removesuffix("_to_server"))
                getattr(module, name)(servicer(), server)
                services += 1
    for pattern in ("events/*_pb2.py", "types/*_pb2.py", "types/task/*_pb2.py"):
        for path in sorted(api.glob(pattern)):
            importlib.import_module("pycontainerd." + ".".join(path.relative_to(api.parent).with_suffix("").parts))
    return services


async def serve(address: str, api: bool) -> None:
    server = grpc.aio.server()
    version_pb2_grpc.add_VersionServicer_to_server(Version(), server)
    if api:
        add_api(server)
    server.add_insecure_port("unix:" + address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    with open(sys.argv[sys.argv.index("--config") + 1], "rb") as f:
        asyncio.run(serve(tomllib.load(f)["grpc"]["address"], "--api" in sys.argv))
