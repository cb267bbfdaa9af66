"""What a C-MOVE or C-GET asks for, where those instances are, and which contexts carry them.

A retrieve identifier (PS3.4 C.4.2.1.4, C.4.3.1.3) names its level and the unique keys of that
level and the levels above, possibly as lists of UIDs (C.2.2.2.2). The instances are found in
the index (inside the caller's tenant only), their stored transfer syntax is read from storage
(Head), and each one is fetched from storage when it is its turn to be sent.

The contexts proposed to a C-MOVE destination offer each stored syntax and an uncompressed
fallback. Each instance is sent as stored when the receiver accepted its syntax, otherwise in
one the transcoder writes (the rule: :func:`pacs_common.transfer_syntaxes.choose`). It is
written to a temporary file as it arrives, from storage or from the transcoder, and pynetdicom
sends that file chunk by chunk (``STORE_SEND_CHUNKED_DATASET``): a retrieve holds no whole
object in memory. An instance that cannot be sent in any accepted syntax fails its
sub-operation and is listed in the Failed SOP Instance UID List (PS3.4 C.4.2.1.5); nothing is
ever sent in a syntax not negotiated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacs.type.v1 import instance_pb2
from pacs_common.clients.errors import from_exception
from pacs_common.clients.storage import StorageClient
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.errors import NotFoundError, UnavailableError
from pacs_common.transfer_syntaxes import Choice
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from pacs_gateway.dimse import codes
from pacs_gateway.dimse.c_find import Finder
from pacs_gateway.dimse.find_identifier import (
    UNIQUE_KEY,
    FindRequest,
    InvalidIdentifierError,
    instance_ref_of_match,
    level_of,
    levels_of,
    matching_string,
)

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
"""A requestor may propose at most 128 presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2)."""
HEAD_CONCURRENCY = 16
UNCOMPRESSED_OUT = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
"""What every storage SCP must accept (Implicit VR Little Endian is the default, PS3.5 10.1)."""


@dataclass(frozen=True)
class RetrieveRequest:
    """A checked retrieve identifier."""

    level: str
    match: dict[str, str]


def retrieve_request_of(identifier: Dataset, model_uid: str) -> RetrieveRequest:
    """Translate a C-MOVE/C-GET identifier into index matching keys.

    Raises:
        InvalidIdentifierError: bad level, or the level's unique key missing (A900).
    """
    level = level_of(identifier, model_uid)
    levels = levels_of(model_uid)
    match: dict[str, str] = {}
    for name in levels[: levels.index(level) + 1]:
        keyword = UNIQUE_KEY[name]
        element = identifier.get(keyword)
        value = matching_string(identifier[keyword]).strip() if element is not None else ""
        if value:
            match[keyword] = value
    if UNIQUE_KEY[level] not in match:
        raise InvalidIdentifierError(
            f"{UNIQUE_KEY[level]} is required to retrieve at the {level} level",
            codes.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    if any(c in value for value in match.values() for c in "*?"):
        raise InvalidIdentifierError("wildcards are not allowed in retrieve keys")
    return RetrieveRequest(level=level, match=match)


class Retriever:
    """Locates and fetches the instances of a retrieve request."""

    def __init__(
        self,
        finder: Finder,
        storage: StorageClient,
        page_size: int,
        transcoder: TranscodeClient | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self._finder = finder
        self._storage = storage
        self._page_size = page_size
        self._transcoder = transcoder
        self._spool_dir = spool_dir

    async def locate(self, tenant: str, request: RetrieveRequest) -> list[instance_pb2.InstanceRef]:
        """Every stored instance the request names, with SOP class and stored syntax.

        Raises:
            UnavailableError: the index or storage is unreachable.
            PacsError: the index refused the query.
        """
        match = {**request.match, "SOPClassUID": ""}
        query = FindRequest(level="IMAGE", identifier=Dataset(), match=match)
        refs: list[instance_pb2.InstanceRef] = []
        offset = 0
        while True:
            page, total = await self._finder.find(
                "IMAGE", query.query(tenant, limit=self._page_size, offset=offset)
            )
            refs.extend(instance_ref_of_match(text, tenant) for text in page)
            offset += len(page)
            if not page or offset >= total:
                break
        return await self._with_syntaxes(refs)

    async def _with_syntaxes(
        self, refs: list[instance_pb2.InstanceRef]
    ) -> list[instance_pb2.InstanceRef]:
        """Fill in each instance's stored transfer syntax (storage Head, bounded concurrency);
        an instance the index knows but storage does not keeps an empty syntax (it fails)."""
        limit = asyncio.Semaphore(HEAD_CONCURRENCY)

        async def head(ref: instance_pb2.InstanceRef) -> instance_pb2.InstanceRef:
            async with limit:
                try:
                    info = await self._storage.head(ref)
                except Exception as exc:
                    error = from_exception(exc, "storage")
                    if isinstance(error, NotFoundError):
                        return ref
                    raise error from exc
            found = instance_pb2.InstanceRef()
            found.CopyFrom(ref)
            found.transfer_syntax_uid = info.instance.transfer_syntax_uid
            if info.instance.sop_class_uid:
                found.sop_class_uid = info.instance.sop_class_uid
            return found

        return list(await asyncio.gather(*(head(ref) for ref in refs)))

    @property
    def can_transcode(self) -> bool:
        """True when a transcoder is configured."""
        return self._transcoder is not None

    async def fetch_to_file(self, ref: instance_pb2.InstanceRef, choice: Choice) -> Path:
        """One instance in the chosen syntax, in a temporary file (the caller removes it): the
        stored bytes (SHA-256 verified by storage) or the transcoder's output, written as they
        arrive.

        Raises:
            PacsError: storage or the transcoder failed, or the object is gone.
        """
        descriptor, name = tempfile.mkstemp(suffix=".dcm", dir=self._spool_dir)
        path = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as out:
                async for chunk in self._chunks(ref, choice):
                    out.write(chunk)
        except BaseException as exc:
            os.unlink(path)  # a local temporary file: not worth a thread hop
            if isinstance(exc, Exception):
                raise from_exception(exc, self._source(choice)) from exc
            raise
        return path

    def _source(self, choice: Choice) -> str:
        return "transcoder" if choice.transcode else "storage"

    async def _chunks(self, ref: instance_pb2.InstanceRef, choice: Choice) -> AsyncIterator[bytes]:
        if not choice.transcode:
            async for chunk in self._storage.get_stream(ref):
                yield chunk
            return
        if self._transcoder is None:
            raise UnavailableError("no transcoder is configured (PACS_GATEWAY_TRANSCODER_TARGET)")
        _, chunks = await self._transcoder.open_stored(
            ref, choice.transfer_syntax_uid, allow_lossy=choice.allow_lossy
        )
        async for chunk in chunks:
            yield chunk


def proposed_contexts(refs: Iterable[instance_pb2.InstanceRef]) -> list[PresentationContext]:
    """Contexts to propose to a C-MOVE destination: per SOP class, one context per stored
    syntax (so each is accepted or refused on its own) plus one uncompressed fallback.
    Falls back to uncompressed only when that would exceed 128 contexts."""
    syntaxes: dict[str, set[str]] = {}
    for ref in refs:
        if ref.sop_class_uid:
            known = syntaxes.setdefault(ref.sop_class_uid, set())
            if ref.transfer_syntax_uid and UID(ref.transfer_syntax_uid) not in UNCOMPRESSED_OUT:
                known.add(ref.transfer_syntax_uid)
    contexts: list[PresentationContext] = []
    for sop_class, stored in sorted(syntaxes.items()):
        contexts.extend(build_context(sop_class, [ts]) for ts in sorted(stored))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED_OUT)))
    if len(contexts) <= MAX_CONTEXTS:
        return contexts
    return [build_context(sop_class, list(UNCOMPRESSED_OUT)) for sop_class in sorted(syntaxes)][
        :MAX_CONTEXTS
    ]


def accepted_syntaxes(contexts: Iterable[PresentationContext], sop_class: str) -> set[str]:
    """Transfer syntaxes accepted for ``sop_class`` among ``contexts``."""
    return {
        str(cx.transfer_syntax[0])
        for cx in contexts
        if str(cx.abstract_syntax) == sop_class and cx.transfer_syntax
    }


class StoredFile(Dataset):
    """Stands for a Part 10 file to send (pynetdicom's C-GET/C-MOVE handlers must yield a
    Dataset): :func:`send_files_chunked` makes the association send the file at ``path`` chunk
    by chunk instead of encoding a dataset in memory."""

    def __init__(self, path: Path, ref: instance_pb2.InstanceRef) -> None:
        super().__init__()
        self.SOPClassUID = ref.sop_class_uid
        self.SOPInstanceUID = ref.sop_instance_uid
        self.StudyInstanceUID = ref.study_instance_uid
        # The audit record of the transfer names the patient (PS3.15 A.5.3.2): read from the
        # file's header, the one identifier the index's reference does not carry.
        self.PatientID = _patient_id(path)
        self.part10_path = path


def _patient_id(path: Path) -> str:
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except (InvalidDicomError, OSError, ValueError):
        return ""
    return str(header.get("PatientID", "") or "")


def send_files_chunked(assoc: Any) -> None:
    """Make ``assoc.send_c_store`` send a :class:`StoredFile` from its file: pynetdicom then
    reads it in PDU-sized chunks (``STORE_SEND_CHUNKED_DATASET``, which needs the file's own
    syntax to be an accepted one: the retrieve handler only yields such files)."""
    original = assoc.send_c_store
    if getattr(original, "sends_files", False):
        return

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(dataset, StoredFile):
            return original(dataset.part10_path, *args, **kwargs)
        return original(dataset, *args, **kwargs)

    send_c_store.sends_files = True  # type: ignore[attr-defined]
    assoc.send_c_store = send_c_store


def unsendable(ref: instance_pb2.InstanceRef) -> Dataset:
    """A dataset that pynetdicom cannot send (no transfer syntax): yielding it makes the
    sub-operation fail and puts its SOP Instance UID in the Failed SOP Instance UID List."""
    dataset = Dataset()
    dataset.SOPClassUID = ref.sop_class_uid or codes.SECONDARY_CAPTURE
    dataset.SOPInstanceUID = ref.sop_instance_uid
    return dataset
