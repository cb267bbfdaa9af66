"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related.

Two request forms:

- ``type="application/dicom"``: each part is one Part 10 object. Parts are parsed as the body
  streams in and each is stored as soon as it is complete, so memory holds one instance.
- ``type="application/dicom+json"``: one part holds a DICOM JSON array of datasets whose bulk
  data (``BulkDataURI``) name other parts by their ``Content-Location``; the whole request is
  read, then each dataset is written as a Part 10 object (transfer syntax from the bulk data
  part's ``transfer-syntax`` parameter, Explicit VR Little Endian otherwise).

The durability rule is C-STORE's: an instance is listed in the Referenced SOP Sequence only
after storage's ``Put`` returned, i.e. after the object is on S3 and ``InstanceStored`` was
acknowledged by Kafka. Each failure is listed in the Failed SOP Sequence with a Failure Reason
(PS3.18 10.5.3, the C-STORE status codes of PS3.4 B.2.3).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pacs.type.v1 import instance_pb2
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    PacsError,
    UnavailableError,
)
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from pacs_dicomweb.backend import Backend
from pacs_dicomweb.http_errors import UnsupportedMediaTypeError
from pacs_dicomweb.multipart import header_parameters

log = logging.getLogger(__name__)

# PS3.4 Table B.2-1 / PS3.18 10.5.3.1: Failure Reason (0008,1197) values.
REASON_PROCESSING_FAILURE = 0x0110
# The SOP Instance UID is stored already under another study (storage's UID claim): PS3.7 C,
# Duplicate SOP Instance, as a C-STORE of the same object through the gateway answers.
REASON_DUPLICATE_SOP_INSTANCE = 0x0111
REASON_OUT_OF_RESOURCES = 0xA700
REASON_DOES_NOT_MATCH = 0xA900  # also: the instance belongs to another study than the path's
REASON_CANNOT_UNDERSTAND = 0xC000


@dataclass
class Outcome:
    """What happened to one part."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    failure: int | None = None
    reason: str = ""


@dataclass
class StowResult:
    """Per-instance outcomes of one request."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def status(self) -> int:
        """PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored (400 if empty)."""
        failed = sum(1 for o in self.outcomes if o.failure is not None)
        if not self.outcomes:
            return 400
        if failed == 0:
            return 200
        return 409 if failed == len(self.outcomes) else 202

    def response(self, base_url: str) -> dict[str, Any]:
        """The Store Instances Response Module (PS3.18 Table 10.5.3-1) as DICOM JSON."""
        stored = [o for o in self.outcomes if o.failure is None]
        failed = [o for o in self.outcomes if o.failure is not None]
        body: dict[str, Any] = {}
        studies = {o.study_uid for o in stored}
        if len(studies) == 1:
            body["00081190"] = {"vr": "UR", "Value": [f"{base_url}/studies/{studies.pop()}"]}
        if failed:
            body["00081198"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": _ui(o.sop_class_uid),
                        "00081155": _ui(o.sop_instance_uid),
                        "00081197": {"vr": "US", "Value": [o.failure]},
                    }
                    for o in failed
                ],
            }
        if stored:
            body["00081199"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": _ui(o.sop_class_uid),
                        "00081155": _ui(o.sop_instance_uid),
                        "00081190": {
                            "vr": "UR",
                            "Value": [
                                f"{base_url}/studies/{o.study_uid}/series/{o.series_uid}"
                                f"/instances/{o.sop_instance_uid}"
                            ],
                        },
                    }
                    for o in stored
                ],
            }
        return body


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


@dataclass
class Part:
    """One received body part."""

    headers: dict[str, str]
    data: bytearray = field(default_factory=bytearray)
    too_large: bool = False


class PartReader:
    """Feed body chunks, collect complete parts (bounded by ``max_part_bytes`` each)."""

    def __init__(self, boundary: str, max_part_bytes: int) -> None:
        self.complete: list[Part] = []
        self._current: Part | None = None
        self._field = b""
        self._value = b""
        self._max = max_part_bytes
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._current = Part({})

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        assert self._current is not None
        name = self._field.decode("latin-1").strip().lower()
        self._current.headers[name] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        assert part is not None
        if part.too_large:
            return
        if len(part.data) + (end - start) > self._max:
            part.too_large = True
            part.data = bytearray()
            return
        part.data += data[start:end]

    def _end(self) -> None:
        if self._current is not None:
            self.complete.append(self._current)
        self._current = None

    def feed(self, chunk: bytes) -> list[Part]:
        """Parse a chunk; the parts it completed.

        Raises:
            InvalidArgumentError: the body is not a well-formed multipart body.
        """
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidArgumentError(f"malformed multipart body: {exc}") from exc
        done, self.complete = self.complete, []
        return done


def request_form(content_type: str | None) -> tuple[str, str]:
    """The boundary and part type of a STOW request.

    Raises:
        UnsupportedMediaTypeError: not multipart/related of application/dicom(+json).
    """
    media, params = header_parameters(content_type or "")
    part_type = params.get("type", "application/dicom").lower()
    if media != "multipart/related" or part_type not in (
        "application/dicom",
        "application/dicom+json",
    ):
        raise UnsupportedMediaTypeError(
            'STOW-RS takes multipart/related; type="application/dicom" or '
            '"application/dicom+json" (PS3.18 10.5.1)'
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise InvalidArgumentError("the multipart Content-Type has no boundary")
    return boundary, part_type


class Stower:
    """Stores the instances of one STOW request for one tenant."""

    def __init__(self, backend: Backend, tenant: str, study_uid: str, max_bytes: int) -> None:
        self.backend = backend
        self.tenant = tenant
        self.study_uid = study_uid
        self.max_bytes = max_bytes
        self.result = StowResult()

    async def store_dicom_parts(self, boundary: str, body: AsyncIterator[bytes]) -> StowResult:
        """Store each application/dicom part as it completes."""
        reader = PartReader(boundary, self.max_bytes)
        async for chunk in body:
            for part in reader.feed(chunk):
                await self._store_part(part)
        return self.result

    async def store_json_parts(self, boundary: str, body: AsyncIterator[bytes]) -> StowResult:
        """Read the whole request, then store each JSON dataset with its bulk data."""
        reader = PartReader(boundary, self.max_bytes)
        parts: list[Part] = []
        async for chunk in body:
            parts.extend(reader.feed(chunk))
        bulk = {
            p.headers.get("content-location", ""): p
            for p in parts
            if p.headers.get("content-location")
        }
        for part in parts:
            media, _ = header_parameters(part.headers.get("content-type", ""))
            if media != "application/dicom+json":
                continue
            try:
                datasets = json.loads(bytes(part.data))
                if not isinstance(datasets, list):
                    datasets = [datasets]
            except ValueError:
                self._failed(Outcome("", ""), REASON_CANNOT_UNDERSTAND, "not a JSON array")
                continue
            for item in datasets:
                try:
                    data = _part10_from_json(item, bulk.get)
                except (InvalidArgumentError, ValueError, TypeError, KeyError) as exc:
                    self._failed(
                        Outcome(_json_uid(item, "00080016"), _json_uid(item, "00080018")),
                        REASON_CANNOT_UNDERSTAND,
                        str(exc),
                    )
                    continue
                await self._store_bytes(data)
        return self.result

    async def _store_part(self, part: Part) -> None:
        media, _ = header_parameters(part.headers.get("content-type", "application/dicom"))
        if part.too_large:
            self._failed(Outcome("", ""), REASON_OUT_OF_RESOURCES, "instance too large")
        elif media not in ("application/dicom", ""):
            self._failed(Outcome("", ""), REASON_CANNOT_UNDERSTAND, f"part of type {media}")
        else:
            await self._store_bytes(bytes(part.data))

    async def _store_bytes(self, data: bytes) -> None:
        try:
            ref = instance_ref_of(data, self.tenant)
        except InvalidArgumentError as exc:
            self._failed(Outcome("", ""), REASON_CANNOT_UNDERSTAND, exc.message)
            return
        outcome = Outcome(
            ref.sop_class_uid,
            ref.sop_instance_uid,
            ref.study_instance_uid,
            ref.series_instance_uid,
        )
        if self.study_uid and ref.study_instance_uid != self.study_uid:
            self._failed(outcome, REASON_DOES_NOT_MATCH, "the instance belongs to another study")
            return
        await self._put(ref, data, outcome)

    async def _put(self, ref: instance_pb2.InstanceRef, data: bytes, outcome: Outcome) -> None:
        try:
            await self.backend.storage.put(ref, data)
        except UnavailableError as exc:
            self._failed(outcome, REASON_OUT_OF_RESOURCES, exc.message)
            return
        except InvalidArgumentError as exc:
            self._failed(outcome, REASON_CANNOT_UNDERSTAND, exc.message)
            return
        except AlreadyExistsError as exc:
            self._failed(outcome, REASON_DUPLICATE_SOP_INSTANCE, exc.message)
            return
        except PacsError as exc:
            self._failed(outcome, REASON_PROCESSING_FAILURE, exc.message)
            return
        self.result.outcomes.append(outcome)

    def _failed(self, outcome: Outcome, reason: int, message: str) -> None:
        outcome.failure = reason
        outcome.reason = message
        log.info("STOW instance refused", extra={"failure_reason": f"{reason:04X}"})
        self.result.outcomes.append(outcome)


def _json_uid(item: Any, tag: str) -> str:
    try:
        return str(item[tag]["Value"][0])
    except (KeyError, IndexError, TypeError):
        return ""


def _part10_from_json(item: Any, bulk: Callable[[str], Part | None]) -> bytes:
    """A Part 10 object from one DICOM JSON dataset and its bulk data parts (PS3.18 F.2)."""
    if not isinstance(item, dict):
        raise InvalidArgumentError("each dataset must be a JSON object")
    syntaxes: set[str] = set()

    def resolve(tag: str, vr: str, uri: str) -> bytes:
        part = bulk(uri)
        if part is None:
            raise InvalidArgumentError(f"no part has Content-Location {uri}")
        _, params = header_parameters(part.headers.get("content-type", ""))
        if params.get("transfer-syntax"):
            syntaxes.add(params["transfer-syntax"])
        return bytes(part.data)

    dataset = Dataset.from_json(item, bulk_data_uri_handler=resolve)
    syntax = UID(syntaxes.pop() if len(syntaxes) == 1 else ExplicitVRLittleEndian)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    dataset.file_meta = meta
    if syntax.is_encapsulated and "PixelData" in dataset:
        from pydicom.encaps import encapsulate  # noqa: PLC0415

        dataset.PixelData = encapsulate([dataset.PixelData])
        dataset["PixelData"].VR = "OB"
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()
