"""The least a Python gRPC daemon can do: asyncio + grpc.aio serving one
Version RPC, nothing else. bench/startup.py times it beside pycontainerd and
containerd so the ready-time ratio can be read against the runtime's floor.

    python bench/floor_server.py --config F   (reads [grpc] address from F)
"""

import asyncio
import sys
import tomllib

import grpc

from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc


class Version(version_pb2_grpc.VersionServicer):
    async def Version(self, request, context):
        return version_pb2.VersionResponse(version="floor")


async def serve(address: str) -> None:
    server = grpc.aio.server()
    version_pb2_grpc.add_VersionServicer_to_server(Version(), server)
    server.add_insecure_port("unix:" + address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    with open(sys.argv[sys.argv.index("--config") + 1], "rb") as f:
        asyncio.run(serve(tomllib.load(f)["grpc"]["address"]))
