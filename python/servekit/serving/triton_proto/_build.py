"""The descriptor pool of :mod:`servekit.serving.triton_proto` and the module builder."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.internal import enum_type_wrapper

#: servekit's own pool (see the package docstring for why not the default one).
POOL = descriptor_pool.DescriptorPool()


def populate(serialized: bytes, namespace: dict[str, Any]) -> FileDescriptor:
    """Add a serialized ``FileDescriptorProto`` to :data:`POOL` (its dependencies first) and
    put what protoc's Python code would define into ``namespace``: a class per top-level
    message (nested messages and enums are attributes of their classes), an enum wrapper per
    top-level enum and each of its values by name. Returns the file's descriptor."""
    file = POOL.AddSerializedFile(serialized)
    for name, message in file.message_types_by_name.items():
        namespace[name] = message_factory.GetMessageClass(message)
    for name, enum in file.enum_types_by_name.items():
        namespace[name] = enum_type_wrapper.EnumTypeWrapper(enum)
        namespace.update((value.name, value.number) for value in enum.values)
    return file
