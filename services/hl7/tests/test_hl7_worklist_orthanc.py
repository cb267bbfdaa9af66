"""Second opinion on worklist matching: the same worklist items served by Orthanc's Modality
Worklists plugin (another implementation of PS3.4 K) and by our gateway, asked the same DCMTK
``findscu -W`` queries (DCMTK's shipped examples plus keys of our own), must match the same
items."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from hl7_helpers import ack_code, mllp_send, orm
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.local import free_port
from pacs_testkit.channels import plain_aio_channel
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_hl7_worklist_e2e import WLISTQRY, _eventually, findscu_worklist

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")

ORDERS = [
    # (patient, name, station, modality, start)
    ("PO-1", "DOE^JANE", "AA1", "CT", "20261201080000"),
    ("PO-2", "DOE^JOHN", "AA2", "MR", "20261201093000"),
    ("PO-3", "ROE^RITA", "AA2", "CT", "20261201143000"),
    ("PO-4", "ROE^RON", "AA3", "MR", "20261202100000"),
    ("PO-5", "POE^PAM", "AA2", "CT", "20261203110000"),
]

QUERIES = [
    ("wlistqry1.dump", ()),
    ("wlistqry3.dump", ()),
    ("wlistqry6.dump", ()),
    ("wlistqry6.dump", ("(0040,0100)[0].(0008,0060)=CT",)),
    ("wlistqry1.dump", ("PatientName=ROE*",)),
    ("wlistqry1.dump", ("(0040,0100)[0].(0040,0002)=20261201-20261202",)),
    (
        "wlistqry1.dump",
        ("(0040,0100)[0].(0040,0002)=20261201", "(0040,0100)[0].(0040,0003)=0900-1200"),
    ),
    ("wlistqry1.dump", ("PatientID=PO-4",)),
]


async def _orthanc(directory: Path, worklists: Path) -> tuple[asyncio.subprocess.Process, int]:
    http_port, dicom_port = free_port(), free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True)
    config = {
        "Name": "orthanc-mwl",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "CLOUDPACS",
        "RemoteAccessAllowed": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomCheckCalledAet": False,
        "Plugins": [str(PLUGIN)],
        "Worklists": {"Enable": True, "Database": str(worklists)},
    }
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config))
    binary = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
    assert binary is not None, "Orthanc is not installed"
    proc = await asyncio.create_subprocess_exec(
        binary,
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", dicom_port)
            writer.close()
            return proc, dicom_port
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("Orthanc did not start")


def _write_worklist_file(item: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"  # DCMTK's worklist file class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    item.file_meta = meta
    item.SpecificCharacterSet = "ISO_IR 192"
    item.save_as(path, enforce_file_format=True)


async def test_same_items_match_in_orthanc_and_in_our_gateway(
    start_hl7, gateway_factory, indexer_app, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    tag = uuid.uuid4().hex[:6].upper()
    for patient, name, station, modality, start in ORDERS:
        message = orm(
            patient, f"{patient}{tag}", station=station, modality=modality, start=start, name=name
        )
        assert ack_code(await mllp_send(hl7.mllp_port, message, tmp_path)) == "AA"

    channel = plain_aio_channel(f"127.0.0.1:{indexer_app.grpc_port}")
    stub = query_grpc.QueryServiceStub(channel)

    async def all_items() -> list[str]:
        response = await stub.FindWorklist(
            query_pb.FindWorklistRequest(query=query_pb.Query(tenant=tenant))
        )
        return list(response.datasets) if len(response.datasets) == len(ORDERS) else []

    items = await _eventually(all_items)
    await channel.close()
    assert len(items) == len(ORDERS)
    worklists = tmp_path / "worklists"
    worklists.mkdir()
    for n, text in enumerate(items):
        _write_worklist_file(Dataset.from_json(text), worklists / f"item{n}.wl")

    proc, orthanc_port = await _orthanc(tmp_path / "orthanc", worklists)
    try:
        for n, (dump, keys) in enumerate(QUERIES):
            asked = (*keys, "AccessionNumber")
            ours = await findscu_worklist(
                gateway.dicom_port, WLISTQRY / dump, tmp_path / f"ours{n}", *asked
            )
            theirs = await findscu_worklist(
                orthanc_port, WLISTQRY / dump, tmp_path / f"orthanc{n}", *asked
            )
            assert sorted(str(d.AccessionNumber) for d in ours) == sorted(
                str(d.AccessionNumber) for d in theirs
            ), (dump, keys)
            assert ours, (dump, keys)  # every query here matches something
    finally:
        proc.terminate()
        await proc.wait()
