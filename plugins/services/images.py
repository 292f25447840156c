"""The images service: containerd.services.images.v1.Images.

`io.containerd.service.v1.images-service` is the image store of the
metadata plugin (plugins/metadata/images.py) plus what containerd's
service adds: it publishes `/images/create`, `/images/update` and
`/images/delete`, and a delete with `sync` runs a garbage collection and
returns after it, so the content only that image held is gone from disk
when the call returns. `io.containerd.grpc.v1.images` serves it.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import empty_pb2

from pycontainerd.api.events import image_pb2 as events_pb
from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.imagestore import Image, image_from_pb, image_to_pb
from pycontainerd.plugins.metadata.images import ImageStore

SERVICE_ID = "images-service"


class NameRequired(errdefs.InvalidArgument):
    """containerd's service refuses a nameless image before its store sees
    it, with a bare status message (no sentinel appended)."""

    sentinel = ""

    def __init__(self) -> None:
        super().__init__("Image.Name required")


class Local:
    """The image store, with events and a synchronous delete."""

    def __init__(self, store: ImageStore, events, gc):
        self.store = store
        self.events = events
        self.gc = gc

    async def get(self, ns: str, name: str) -> Image:
        return await self.store.get(ns, name)

    async def list(self, ns: str, *filter_strings: str) -> list[Image]:
        return await self.store.list(ns, *filter_strings)

    async def create(self, ns: str, image: Image) -> Image:
        if not image.name:
            raise NameRequired()
        created = await self.store.create(ns, image)
        self.events.publish(ns, "/images/create", events_pb.ImageCreate(name=created.name, labels=created.labels))
        return created

    async def update(self, ns: str, image: Image, paths: list[str]) -> Image:
        if not image.name:
            raise NameRequired()
        updated = await self.store.update(ns, image, paths)
        self.events.publish(ns, "/images/update", events_pb.ImageUpdate(name=updated.name, labels=updated.labels))
        return updated

    async def delete(self, ns: str, name: str, sync: bool = False) -> None:
        await self.store.delete(ns, name)
        self.events.publish(ns, "/images/delete", events_pb.ImageDelete(name=name))
        if sync:
            await self.gc.schedule_and_wait()


class Service(pb_grpc.ImagesServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_ImagesServicer_to_server(self, server)

    async def Get(self, request, context):
        image = await self.local.get(namespace(context), request.name)
        return pb.GetImageResponse(image=image_to_pb(image))

    async def List(self, request, context):
        images = await self.local.list(namespace(context), *request.filters)
        return pb.ListImagesResponse(images=[image_to_pb(i) for i in images])

    async def Create(self, request, context):
        ns = namespace(context)
        created = await self.local.create(ns, image_from_pb(request.image))
        return pb.CreateImageResponse(image=image_to_pb(created))

    async def Update(self, request, context):
        ns = namespace(context)
        updated = await self.local.update(ns, image_from_pb(request.image), list(request.update_mask.paths))
        return pb.UpdateImageResponse(image=image_to_pb(updated))

    async def Delete(self, request, context):
        await self.local.delete(namespace(context), request.name, request.sync)
        return empty_pb2.Empty()


async def init_local(ic: InitContext) -> Local:
    return Local(ImageStore(ic.get(PluginType.METADATA)), ic.get(PluginType.EVENT), ic.get(PluginType.GC))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "images", init_local, Service,
                        requires=(PluginType.EVENT, PluginType.METADATA, PluginType.GC))
