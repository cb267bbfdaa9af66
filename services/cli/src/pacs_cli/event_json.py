"""A Kafka event's protobuf payload as JSON for an operator's eyes, patient data masked.

The payload's type is its CloudEvents ``ce_type`` header (the message's full protobuf name,
:func:`pacs_common.events.event_type`), looked up among every generated ``pacs.events.v1``
module, so event types added later decode without a change here.

Masking is by allow-list, not by deny-list: a string field is shown only when its name is in
:data:`SAFE_STRING_FIELDS` (technical fields: tenant, SOP class, transfer syntax, versions,
times, codes) and every bytes field (a DICOM header, a query) only as its length. Anything else,
including fields added later, prints as :data:`MASK` unless ``show_phi``: a new field carrying a
patient's name can never leak by default. Numbers, booleans and enums carry no patient data.
"""

from __future__ import annotations

import base64
import importlib
import pkgutil
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

MASK = "***"
SAFE_STRING_FIELDS = frozenset(
    {
        "tenant",
        "source_tenant",
        "sop_class_uid",
        "transfer_syntax_uid",
        "source_transfer_syntax_uid",
        "version_id",
        "source_version_id",
        "sha256",
        "modality",
        "rule",
        "status",
        "message_type",
        "trigger",
        "action",
        "event_type_code",
        "query_model",
        "role_code",
        "source",
        "project",
        "control_id",
        "id",
    }
)


def _load_event_modules() -> None:
    """Import every generated ``pacs.events.v1`` module so its types are in the default pool."""
    package = importlib.import_module("pacs.events.v1")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"pacs.events.v1.{module.name}")


def decode(ce_type: str | None, value: bytes | None) -> Message | None:
    """The payload as its protobuf message; None when the type is unknown or it does not parse."""
    if not ce_type:
        return None
    _load_event_modules()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(ce_type)
    except KeyError:
        return None
    message: Message = GetMessageClass(descriptor)()
    try:
        message.ParseFromString(value or b"")
    except DecodeError:
        return None
    return message


def _shown(name: str) -> bool:
    return name in SAFE_STRING_FIELDS or name.endswith("_time")


def _scalar(field: FieldDescriptor, name: str, value: Any, show_phi: bool) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value, show_phi)
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type.values_by_number.get(value) if field.enum_type else None
        return enum.name if enum is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        if show_phi:
            return base64.b64encode(value).decode()
        return f"{MASK} ({len(value)} bytes)"
    if field.type == FieldDescriptor.TYPE_STRING:
        return value if show_phi or _shown(name) else MASK
    return value


def to_json(message: Message, show_phi: bool = False) -> dict[str, Any]:
    """The fields set in ``message`` (protobuf field names), masked unless ``show_phi``."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            out[field.name] = {
                str(k): _scalar(value_field, field.name, v, show_phi) for k, v in value.items()
            }
        elif field.is_repeated:
            out[field.name] = [_scalar(field, field.name, v, show_phi) for v in value]
        else:
            out[field.name] = _scalar(field, field.name, value, show_phi)
    return out
