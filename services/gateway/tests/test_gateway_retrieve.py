"""C-MOVE and C-GET from the real stack to DCMTK receivers; tenant confinement of queries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import (
    Storescp,
    free_port,
    run_dcmtk,
    sample_path,
    scu_association,
    scu_find,
    stored_and_indexed,
    write_registry,
)
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import STUDY_ROOT_FIND, STUDY_ROOT_MOVE
from pydicom import dcmread
from pydicom.dataset import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

J2K = "JPEG2000.dcm"  # JPEG 2000 (lossy), study 1.3.6.1.4.1.5962.1.2.8...
JPEG_LL = "JPEG-LL.dcm"  # same study, JPEG lossless
CT = "CT_small.dcm"  # another study


OTHER_NETWORK = "127.0.0.2"
"""Where the other tenant's caller comes from: tenants sharing a network would need TLS client
subjects (the registry refuses them otherwise), so each gets an address of its own."""


def _registry(path: Path, dest_port: int, tenant: str) -> Path:
    return write_registry(
        path,
        {
            f"{tenant}-a": {
                "callers": [{"ae_title": "MODALITY", "networks": ["127.0.0.1/32"]}],
                "destinations": [{"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}],
            },
            f"{tenant}-b": {
                "callers": [{"ae_title": "OTHERSITE", "networks": [f"{OTHER_NETWORK}/32"]}],
                "destinations": [{"ae_title": "OTHERDEST", "host": "127.0.0.1", "port": dest_port}],
            },
        },
    )


async def _stack(start_connected_gateway, tmp_path: Path, dest_port: int, tenant: str) -> Any:
    registry = _registry(tmp_path / "registry.yaml", dest_port, tenant)
    return await start_connected_gateway(site_registry=registry)


def _study(name: str) -> str:
    return str(dcmread(sample_path(name), stop_before_pixels=True).StudyInstanceUID)


async def _movescu_to_dest(gateway: Any, *keys: str) -> None:
    """DCMTK movescu (Study Root) as MODALITY of ``keys`` to the registered destination DEST;
    the test fails unless the C-MOVE ends with Success."""
    key_args = [arg for key in keys for arg in ("-k", key)]
    code, out = await run_dcmtk(
        "movescu", "-v", "-S", "-aet", "MODALITY", "-aec", "CLOUDPACS", "-aem", "DEST",
        *key_args, "127.0.0.1", str(gateway.dicom_port),
    )  # fmt: skip
    assert code == 0, out
    assert "Received Final Move Response (Success)" in out, out


async def _stored_and_indexed(gateway: Any, names: list[str], calling: str = "MODALITY") -> None:
    await stored_and_indexed(gateway.dicom_port, [sample_path(n) for n in names], calling)


async def test_movescu_study_to_storescp_as_stored(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    async with Storescp(tmp_path / "received", accept_all=True) as dest:
        gateway = await _stack(start_connected_gateway, tmp_path, dest.port, tenant)
        await _stored_and_indexed(gateway, [J2K, JPEG_LL, CT])

        await _movescu_to_dest(
            gateway, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={_study(J2K)}"
        )
        received = dest.received()

    by_uid = {str(ds.SOPInstanceUID): ds for ds in received}
    originals = [dcmread(sample_path(n)) for n in (J2K, JPEG_LL)]
    assert set(by_uid) == {str(o.SOPInstanceUID) for o in originals}  # not the CT study
    for original in originals:
        copy = by_uid[str(original.SOPInstanceUID)]
        # storescp accepted every syntax: each instance arrives as stored, pixels untouched
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.PixelData == original.PixelData


async def test_move_to_uncompressed_only_receiver_decompresses(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    async with Storescp(tmp_path / "received") as dest:  # uncompressed syntaxes only
        gateway = await _stack(start_connected_gateway, tmp_path, dest.port, tenant)
        await _stored_and_indexed(gateway, [JPEG_LL])
        original = dcmread(sample_path(JPEG_LL))

        await _movescu_to_dest(
            gateway,
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={original.StudyInstanceUID}",
            f"SeriesInstanceUID={original.SeriesInstanceUID}",
            f"SOPInstanceUID={original.SOPInstanceUID}",
        )
        received = dest.received()

    assert len(received) == 1
    copy = received[0]
    assert not copy.file_meta.TransferSyntaxUID.is_compressed
    assert copy.SOPInstanceUID == original.SOPInstanceUID  # same instance, another encoding
    # JPEG lossless: decompressed pixels equal the original's decoded pixels, bit for bit
    original.decompress()
    assert copy.PixelData == original.PixelData


async def test_getscu_series_comes_back_on_the_same_association(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    gateway = await _stack(start_connected_gateway, tmp_path, free_port(), tenant)
    await _stored_and_indexed(gateway, [CT])
    original = dcmread(sample_path(CT))
    out_dir = tmp_path / "got"
    out_dir.mkdir()

    code, out = await run_dcmtk(
        "getscu",
        "-v",
        "-S",
        "-aet",
        "MODALITY",
        "-aec",
        "CLOUDPACS",
        "-od",
        out_dir,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={original.StudyInstanceUID}",
        "-k",
        f"SeriesInstanceUID={original.SeriesInstanceUID}",
        "127.0.0.1",
        str(gateway.dicom_port),
    )

    assert code == 0, out
    files = list(out_dir.iterdir())
    assert len(files) == 1, out
    copy = dcmread(files[0])
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    assert copy.PixelData == original.PixelData


def _move(
    port: int, destination: str, study: str, calling: str, source: str = "127.0.0.1"
) -> list[Dataset]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    with scu_association(port, STUDY_ROOT_MOVE, calling, source=source) as assoc:
        return [rsp for rsp, _ in assoc.send_c_move(identifier, destination, STUDY_ROOT_MOVE)]


async def test_unregistered_destination_is_a801(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    gateway = await _stack(start_connected_gateway, tmp_path, free_port(), tenant)
    responses = await asyncio.to_thread(
        _move, gateway.dicom_port, "NOWHERE", _study(CT), "MODALITY"
    )
    assert [int(r.Status) for r in responses] == [0xA801]  # Move Destination unknown


async def test_other_tenants_cannot_see_or_move_a_study(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    async with Storescp(tmp_path / "received", ae_title="OTHERDEST") as dest:
        gateway = await _stack(start_connected_gateway, tmp_path, dest.port, tenant)
        await _stored_and_indexed(gateway, [CT])  # stored by MODALITY: tenant hospital-a

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        mine = await asyncio.to_thread(
            scu_find, gateway.dicom_port, identifier, STUDY_ROOT_FIND, "MODALITY"
        )
        theirs = await asyncio.to_thread(
            scu_find, gateway.dicom_port, identifier, STUDY_ROOT_FIND, "OTHERSITE", OTHER_NETWORK
        )
        moved = await asyncio.to_thread(
            _move, gateway.dicom_port, "OTHERDEST", _study(CT), "OTHERSITE", OTHER_NETWORK
        )
        # and clinic-b cannot send to hospital-a's destination either
        foreign = await asyncio.to_thread(
            _move, gateway.dicom_port, "DEST", _study(CT), "OTHERSITE", OTHER_NETWORK
        )

    assert [c for c, _ in mine] == [codes.PENDING, codes.SUCCESS]
    assert [c for c, _ in theirs] == [codes.SUCCESS]
    assert int(moved[-1].Status) == codes.SUCCESS
    assert int(moved[-1].get("NumberOfCompletedSuboperations", 0)) == 0
    assert dest.received() == []
    assert [int(r.Status) for r in foreign] == [0xA801]


async def test_undecodable_instance_is_listed_as_failed(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    """JPEG-lossy.dcm cannot be decoded by the installed JPEG decoder, so a receiver that
    takes only uncompressed syntaxes cannot get it: the sub-operation fails, the others go."""
    async with Storescp(tmp_path / "received") as dest:
        gateway = await _stack(start_connected_gateway, tmp_path, dest.port, tenant)
        await _stored_and_indexed(gateway, ["JPEG-lossy.dcm", JPEG_LL])
        lossy = dcmread(sample_path("JPEG-lossy.dcm"), stop_before_pixels=True)

        responses = await asyncio.to_thread(
            _move, gateway.dicom_port, "DEST", str(lossy.StudyInstanceUID), "MODALITY"
        )
        received = dest.received()

    final = responses[-1]
    assert int(final.Status) == 0xB000  # sub-operations complete, one or more failures
    assert int(final.NumberOfFailedSuboperations) == 1
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert [str(ds.SOPInstanceUID) for ds in received] == [
        str(dcmread(sample_path(JPEG_LL), stop_before_pixels=True).SOPInstanceUID)
    ]
    pending = [r for r in responses if int(r.Status) == codes.PENDING]
    assert pending, "pending responses carry the sub-operation counts"
