"""C-STORE to storage and C-FIND from the index, through the real services and DCMTK."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest
from gateway_helpers import (
    SAMPLE_FILES,
    closed_port,
    eventually,
    findscu,
    run_dcmtk,
    sample_path,
    scu_find,
    scu_store_files,
    stored_and_indexed,
    wait_indexed,
)
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import NotFoundError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.dataset import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _ref(tenant: str, dataset: Dataset) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=dataset.StudyInstanceUID,
        series_instance_uid=dataset.SeriesInstanceUID,
        sop_instance_uid=dataset.SOPInstanceUID,
    )


def _content(dataset: Dataset) -> dict[int, object]:
    """Every element value except the file meta group (rebuilt from the C-STORE command) and
    Data Set Trailing Padding (FFFC,FFFC), which DCMTK drops when sending (PS3.10 7.2)."""
    return {int(e.tag): e.value for e in dataset if e.tag.group not in (0x0002, 0xFFFC)}


def _network_syntaxes(report: str) -> dict[str, str]:
    """File name -> transfer syntax UID it was sent in, from a dcmsend report (+crf)."""
    result: dict[str, str] = {}
    name = ""
    for line in report.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Filename":
            name = Path(value.strip()).name
        elif key.strip() == "Network Xfer":
            result[name] = value.split("=")[0].strip()
    return result


async def test_dcmsend_samples_are_stored_as_sent_and_findscu_finds_them(
    start_connected_gateway, storage_app, tenant: str, tmp_path: Path
) -> None:
    gateway = await start_connected_gateway(
        default_tenant=tenant,
    )
    paths = [sample_path(name) for name in SAMPLE_FILES]

    # dcmsend (DCMTK) proposes each file's own transfer syntax, as a modality would;
    # storescu would propose uncompressed syntaxes only unless told one codec per run.
    report = tmp_path / "report.txt"
    code, out = await run_dcmtk(
        "dcmsend",
        "-v",
        "-dn",
        "-aet",
        "MODALITY1",
        "-aec",
        "CLOUDPACS",
        "+crf",
        report,
        "127.0.0.1",
        str(gateway.dicom_port),
        *paths,
    )

    assert code == 0, out
    sent_syntax = _network_syntaxes(report.read_text())
    assert report.read_text().count("0x0000 (Success)") == len(paths), report.read_text()

    # kept alive by the name
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls())

    storage = StorageClient(channel)
    for path in paths:
        original = dcmread(path)
        info = await storage.head(_ref(tenant, original))
        stored = await storage.get(_ref(tenant, original))
        assert hashlib.sha256(stored).hexdigest() == info.sha256
        assert info.size == len(stored)
        # the calling AE that delivered it is recorded with the object (routing rules match it)
        assert info.sending_ae_title == "MODALITY1"
        # stored in the syntax it travelled in (compressed ones exactly as in the file)
        assert info.instance.transfer_syntax_uid == sent_syntax[path.name]
        copy = dcmread(io.BytesIO(stored))
        assert copy.file_meta.TransferSyntaxUID == sent_syntax[path.name]
        if original.file_meta.TransferSyntaxUID.is_compressed:
            assert sent_syntax[path.name] == original.file_meta.TransferSyntaxUID
        assert _content(copy) == _content(original), path.name

    studies = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in paths}
    await wait_indexed(gateway.dicom_port, paths, calling="TESTSCU")

    _, responses = await findscu(
        gateway.dicom_port,
        tmp_path / "responses",
        "-S",
        "-aet",
        "VIEWER1",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName",
        "-k",
        "StudyDate",
    )
    assert {str(r.StudyInstanceUID) for r in responses} == studies
    for response in responses:
        assert response.QueryRetrieveLevel == "STUDY"
        assert "PatientName" in response
        assert "StudyDate" in response
        assert "Modality" not in response  # only what was asked for


async def test_findscu_matches_patient_name_at_study_level_in_patient_root(
    start_connected_gateway, tenant: str, tmp_path: Path
) -> None:
    gateway = await start_connected_gateway(
        default_tenant=tenant,
    )
    ct, mr = sample_path("CT_small.dcm"), sample_path("MR_small_jpeg_ls_lossless.dcm")
    await stored_and_indexed(gateway.dicom_port, [ct, mr], calling="TESTSCU")
    ct_study = str(dcmread(ct, stop_before_pixels=True).StudyInstanceUID)

    _, responses = await findscu(
        gateway.dicom_port,
        tmp_path / "responses",
        "-P",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=1CT1",
        "-k",
        "PatientName=Compressed*",
        "-k",
        "StudyInstanceUID",
    )
    assert [str(r.StudyInstanceUID) for r in responses] == [ct_study]
    assert str(responses[0].PatientName) == "CompressedSamples^CT1"


async def test_store_keeps_dataset_bytes_and_resend_is_harmless(
    start_gateway, storage_app, tenant: str
) -> None:
    gateway = await start_gateway(
        storage_target=f"127.0.0.1:{storage_app.grpc_port}", default_tenant=tenant
    )
    path = sample_path("image_dfl.dcm")  # deflated: the bytes must not be re-encoded

    first = await asyncio.to_thread(scu_store_files, gateway.dicom_port, [path])
    again = await asyncio.to_thread(scu_store_files, gateway.dicom_port, [path])

    assert first == again == [codes.SUCCESS]
    original = path.read_bytes()
    meta_end = _end_of_file_meta(original)
    # kept alive by the name
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls())
    storage = StorageClient(channel)
    stored = await storage.get(_ref(tenant, dcmread(path, stop_before_pixels=True)))
    assert stored[_end_of_file_meta(stored) :] == original[meta_end:]


def _end_of_file_meta(part10: bytes) -> int:
    """Offset of the first byte after the File Meta Information (PS3.10 7.1)."""
    group_length = int.from_bytes(part10[140:144], "little")  # (0002,0000) UL value
    return 144 + group_length


async def test_c_find_with_index_unreachable_is_out_of_resources(start_gateway) -> None:
    gateway = await start_gateway()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    responses = await asyncio.to_thread(scu_find, gateway.dicom_port, identifier, STUDY_ROOT_FIND)
    assert [code for code, _ in responses] == [codes.OUT_OF_RESOURCES]


async def test_c_find_bad_level_is_refused(start_gateway) -> None:
    gateway = await start_gateway()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"  # not a level of the Study Root model
    responses = await asyncio.to_thread(scu_find, gateway.dicom_port, identifier, STUDY_ROOT_FIND)
    assert [code for code, _ in responses] == [codes.DATASET_DOES_NOT_MATCH_SOP_CLASS]


async def test_c_find_patient_level_groups_studies(start_connected_gateway, tenant: str) -> None:
    gateway = await start_connected_gateway(
        default_tenant=tenant,
    )
    files = [sample_path(n) for n in ("JPEG2000.dcm", "JPEG-LL.dcm", "CT_small.dcm")]
    assert await asyncio.to_thread(scu_store_files, gateway.dicom_port, files) == [0, 0, 0]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = ""
    identifier.PatientName = ""
    identifier.NumberOfPatientRelatedStudies = None
    identifier.NumberOfPatientRelatedInstances = None
    responses: list[tuple[int, Dataset | None]] = []

    async def all_three_indexed() -> bool:
        responses[:] = await asyncio.to_thread(
            scu_find, gateway.dicom_port, identifier, PATIENT_ROOT_FIND
        )
        counts = [
            int(ds.NumberOfPatientRelatedInstances or 0)
            for code, ds in responses
            if code == codes.PENDING and ds is not None
        ]
        return sum(counts) == 3

    assert await eventually(all_three_indexed, within_s=90)
    assert responses[-1][0] == codes.SUCCESS
    patients = {str(ds.PatientID): ds for code, ds in responses if code == codes.PENDING}
    assert set(patients) == {"8NM1", "1CT1"}
    assert int(patients["8NM1"].NumberOfPatientRelatedStudies) == 1
    assert int(patients["8NM1"].NumberOfPatientRelatedInstances) == 2
    assert int(patients["1CT1"].NumberOfPatientRelatedInstances) == 1


async def test_kafka_down_means_out_of_resources_and_nothing_stored(
    start_gateway, infra_env, bucket_name: str, tenant: str
) -> None:
    """Storage is up but cannot announce (Kafka unreachable): the image is not acknowledged,
    and it is not left behind in S3 either."""
    from pacs_common.settings import KafkaSettings  # noqa: PLC0415  (needs infra_env's env)

    storage_app = await start_storage(
        bucket_name, kafka=KafkaSettings(bootstrap=f"127.0.0.1:{closed_port()}")
    )
    try:
        gateway = await start_gateway(
            storage_target=f"127.0.0.1:{storage_app.grpc_port}", default_tenant=tenant
        )
        path = sample_path("CT_small.dcm")
        _code, out = await run_dcmtk(
            "storescu", "-v", "-aec", "CLOUDPACS", "127.0.0.1", str(gateway.dicom_port), path
        )
        assert "Received Store Response (Refused: OutOfResources)" in out, out

        # kept alive by the name
        channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls())

        storage = StorageClient(channel)
        with pytest.raises(NotFoundError):
            await storage.head(_ref(tenant, dcmread(path, stop_before_pixels=True)))
    finally:
        await storage_app.stop()


async def test_findscu_series_and_image_levels(
    start_connected_gateway, tenant: str, tmp_path: Path
) -> None:
    gateway = await start_connected_gateway(
        default_tenant=tenant,
    )
    files = [sample_path(n) for n in ("JPEG2000.dcm", "JPEG-LL.dcm")]  # one study, one series
    expected = await stored_and_indexed(gateway.dicom_port, files, calling="TESTSCU")
    first = dcmread(files[0], stop_before_pixels=True)

    async def find(level: str, *keys: str) -> list[Dataset]:
        keys_args = [arg for key in keys for arg in ("-k", key)]
        _, responses = await findscu(
            gateway.dicom_port,
            tmp_path / level,
            "-S",
            "-k",
            f"QueryRetrieveLevel={level}",
            *keys_args,
        )
        return responses

    series = await find(
        "SERIES", f"StudyInstanceUID={first.StudyInstanceUID}", "SeriesInstanceUID", "Modality"
    )
    assert [(s.SeriesInstanceUID, s.Modality) for s in series] == [
        (first.SeriesInstanceUID, first.Modality)
    ]
    images = await find(
        "IMAGE",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        f"SeriesInstanceUID={first.SeriesInstanceUID}",
        "SOPInstanceUID",
        "SOPClassUID",
    )
    assert {str(i.SOPInstanceUID) for i in images} == expected
    assert {str(i.SOPClassUID) for i in images} == {str(first.SOPClassUID)}
