"""Issue 12, "Done when": a DICOM SCU that accepts only one compressed syntax per storage
context gets every instance of a stored uncompressed study in exactly that syntax, bit-exact,
for RLE, JPEG Lossless SV1, JPEG-LS, JPEG 2000 and HTJ2K lossless — the gateway asking the
real transcoder service, over the real stack (storage on S3, Kafka, the indexer)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_helpers import free_port, sample_path, stored_and_indexed, write_registry
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import STUDY_ROOT_GET
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

UNCOMPRESSED = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm"]
"""Signed 16-bit CT, 16-bit MR, 8-bit RGB, 10-frame 12-bit MR: all stored uncompressed."""


def _study(tmp_path: Path) -> list[Path]:
    """The samples as one study (a study UID of this test), stored uncompressed."""
    study = generate_uid()
    paths = []
    for name in UNCOMPRESSED:
        ds = dcmread(sample_path(name))
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        ds.StudyInstanceUID = study
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _c_get(port: int, study: str, sop_classes: set[str], syntax: str) -> tuple[list, list]:
    """C-GET the study, accepting each SOP class in ``syntax`` only; the final responses and
    the received (transfer syntax, Part 10 bytes) pairs."""
    received: list[tuple[str, bytes]] = []

    def on_store(event: Any) -> int:
        buffer = io.BytesIO()
        buffer.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
        buffer.write(event.request.DataSet.getvalue())
        received.append((str(event.context.transfer_syntax), buffer.getvalue()))
        return 0x0000

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(STUDY_ROOT_GET)
    roles = []
    for sop_class in sorted(sop_classes):
        ae.add_requested_context(sop_class, [syntax])
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="CLOUDPACS", ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        responses = [status for status, _ in assoc.send_c_get(identifier, STUDY_ROOT_GET)]
    finally:
        assoc.release()
    return responses, received


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, HTJ2KLossless]
)
async def test_single_compressed_syntax_receiver_gets_it_bit_exact(
    start_connected_gateway: Any, tmp_path: Path, tenant: str, syntax: str
) -> None:
    registry = write_registry(
        tmp_path / "registry.yaml",
        {
            tenant: {
                "callers": [{"ae_title": "MODALITY", "networks": ["127.0.0.1/32"]}],
                "destinations": [{"ae_title": "DEST", "host": "127.0.0.1", "port": free_port()}],
            }
        },
    )
    gateway = await start_connected_gateway(site_registry=registry)
    paths = _study(tmp_path)
    await stored_and_indexed(gateway.dicom_port, paths)
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in paths}
    study = str(next(iter(originals.values())).StudyInstanceUID)
    sop_classes = {str(ds.SOPClassUID) for ds in originals.values()}

    responses, received = await asyncio.to_thread(
        _c_get, gateway.dicom_port, study, sop_classes, syntax
    )

    final = responses[-1]
    assert int(final.Status) == codes.SUCCESS, final
    assert int(final.NumberOfCompletedSuboperations) == len(paths)
    assert len(received) == len(paths)
    for transfer_syntax, part10 in received:
        copy = dcmread(io.BytesIO(part10))
        assert transfer_syntax == syntax
        assert copy.file_meta.TransferSyntaxUID == syntax
        original = originals.pop(str(copy.SOPInstanceUID))  # same instance, another encoding
        assert np.array_equal(pixel_array(copy), pixel_array(original))
    assert originals == {}


async def test_without_a_transcoder_uncompressed_still_goes_to_implicit_only_receivers(
    start_connected_gateway: Any, tmp_path: Path, tenant: str
) -> None:
    """Explicit to Implicit VR Little Endian needs no transcoder: pynetdicom re-encodes."""
    registry = write_registry(
        tmp_path / "registry.yaml",
        {tenant: {"callers": [{"ae_title": "MODALITY", "networks": ["127.0.0.1/32"]}]}},
    )
    gateway = await start_connected_gateway(site_registry=registry, transcoder_target="")
    paths = _study(tmp_path)[:1]  # CT_small, stored Explicit VR Little Endian
    await stored_and_indexed(gateway.dicom_port, paths)
    original = dcmread(paths[0])

    responses, received = await asyncio.to_thread(
        _c_get, gateway.dicom_port, str(original.StudyInstanceUID),
        {str(original.SOPClassUID)}, ImplicitVRLittleEndian,
    )  # fmt: skip

    assert int(responses[-1].Status) == codes.SUCCESS
    [(syntax, part10)] = received
    assert syntax == ImplicitVRLittleEndian
    assert np.array_equal(pixel_array(dcmread(io.BytesIO(part10))), pixel_array(original))
