"""STOW-RS through dicomweb-client and hand-made bodies: per-instance results, the durability
rule (success only after storage's Put), and the JSON + bulk data form."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import eventually, series_from
from pacs_common.dicom import instance_ref_of
from pydicom.uid import generate_uid

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _body(parts: list[tuple[str, bytes]], boundary: str) -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def test_stored_instances_are_durable_and_findable(
    client: DICOMwebClient, storage_client: Any, tenant: str
) -> None:
    objects = series_from("CT_small.dcm", 3) + series_from("MR_small_jp2klossless.dcm", 1)
    datasets = [pydicom.dcmread(io.BytesIO(o)) for o in objects]
    response = await asyncio.to_thread(client.store_instances, datasets)
    referenced = response.ReferencedSOPSequence  # dicomweb-client parses the JSON answer
    assert len(referenced) == 4
    assert "FailedSOPSequence" not in response
    for item, data in zip(referenced, objects, strict=True):
        ref = instance_ref_of(data, tenant)
        assert item.ReferencedSOPInstanceUID == ref.sop_instance_uid
        assert item.RetrieveURL.endswith(f"/instances/{ref.sop_instance_uid}")
        # Durable when answered: storage already has the object (S3 + InstanceStored acked).
        info = await storage_client.head(ref)
        assert info.size > 0
    study = datasets[0].StudyInstanceUID

    async def findable() -> bool:
        found = await asyncio.to_thread(client.search_for_instances, study)
        return len(found) == 3

    assert await eventually(findable)


async def test_failures_are_listed_per_instance(dicomweb_app: Any, token: str) -> None:
    good = series_from("CT_small.dcm", 1)[0]
    other_study = series_from("CT_small.dcm", 1)[0]
    path_study = pydicom.dcmread(io.BytesIO(good)).StudyInstanceUID
    boundary = uuid.uuid4().hex
    body = _body(
        [
            ("application/dicom", good),
            ("application/dicom", b"not dicom at all"),
            ("application/dicom", other_study),
        ],
        boundary,
    )
    response = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies/{path_study}",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            # dcmjs#113: quoted type and boundary must be accepted.
            "Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"',
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert response.status_code == 202  # some stored, some failed (PS3.18 10.5.3)
    answer = response.json()
    assert len(answer["00081199"]["Value"]) == 1
    reasons = sorted(item["00081197"]["Value"][0] for item in answer["00081198"]["Value"])
    assert reasons == [0xA900, 0xC000]  # another study; cannot understand


async def test_the_same_uid_under_another_study_is_a_duplicate(
    client: DICOMwebClient, dicomweb_app: Any, token: str
) -> None:
    """Stored under one study, the SOP Instance UID is refused under another (0x0111, nothing
    stored), however soon after the first: storage's UID claim decides, not the index."""
    dataset = pydicom.dcmread(io.BytesIO(series_from("CT_small.dcm", 1)[0]))
    await asyncio.to_thread(client.store_instances, [dataset])
    dataset.StudyInstanceUID = generate_uid()
    moved = io.BytesIO()
    dataset.save_as(moved, enforce_file_format=True)
    boundary = uuid.uuid4().hex
    response = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies",
        data=_body([("application/dicom", moved.getvalue())], boundary),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}",
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert response.status_code == 409, response.text
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0x0111]


async def test_all_failed_is_409_and_wrong_media_type_is_415(dicomweb_app: Any, token: str) -> None:
    boundary = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}"}
    failed = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies",
        data=_body([("application/dicom", b"junk")], boundary),
        headers={**headers, "Content-Type": f"multipart/related; boundary={boundary}"},
        timeout=60,
    )
    assert failed.status_code == 409
    wrong = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies",
        data=b"{}",
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert wrong.status_code == 415


async def test_storage_down_is_out_of_resources_and_nothing_is_acknowledged(
    dicomweb_app: Any, token: str
) -> None:
    # A second DICOMweb service whose storage is a closed port: every Put fails retriably.
    import socket  # noqa: PLC0415

    from pacs_dicomweb.app import create_app  # noqa: PLC0415
    from pacs_dicomweb.settings import DicomwebSettings  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    app = create_app(
        DicomwebSettings(
            http_port=0,
            grpc_port=0,
            storage_target=f"127.0.0.1:{closed}",
            indexer_target=dicomweb_app.settings.indexer_target,
            storage_timeout=5,
            shutdown_grace_s=1,
        )
    )
    await app.start()
    try:
        boundary = uuid.uuid4().hex
        response = await asyncio.to_thread(
            requests.post,
            f"{app.url}/studies",
            data=_body([("application/dicom", series_from("CT_small.dcm", 1)[0])], boundary),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}",
            },
            timeout=60,
        )
    finally:
        await app.stop()
    assert response.status_code == 409
    answer = response.json()
    assert "00081199" not in answer
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]


async def test_json_with_bulk_data_parts(
    dicomweb_app: Any, client: DICOMwebClient, token: str
) -> None:
    source = pydicom.dcmread(io.BytesIO(series_from("CT_small.dcm", 1)[0]))
    pixel_data = source.PixelData
    bulk_uri = f"urn:uuid:{uuid.uuid4()}"
    metadata = source.to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=lambda _: bulk_uri
    )
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\n".encode()
        + json.dumps([metadata]).encode()
        + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Location: {bulk_uri}\r\n\r\n".encode()
        + pixel_data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/related; type=application/dicom+json; boundary={boundary}",
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text

    # WADO-RS finds the instance through the index, which learns of it asynchronously.
    async def indexed() -> bool:
        found = await asyncio.to_thread(client.search_for_instances, source.StudyInstanceUID)
        return len(found) == 1

    assert await eventually(indexed)
    stored = await asyncio.to_thread(
        client.retrieve_instance,
        source.StudyInstanceUID,
        source.SeriesInstanceUID,
        source.SOPInstanceUID,
    )
    assert stored.PixelData == pixel_data
    assert stored.PatientName == source.PatientName


async def test_stow_needs_the_ingest_role(dicomweb_app: Any, hydra: Any, tenant: str) -> None:
    reader = hydra.token(tenant, ["query", "retrieve"])
    boundary = uuid.uuid4().hex
    response = await asyncio.to_thread(
        requests.post,
        f"{dicomweb_app.url}/studies",
        data=_body([("application/dicom", series_from("CT_small.dcm", 1)[0])], boundary),
        headers={
            "Authorization": f"Bearer {reader}",
            "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}",
        },
        timeout=60,
    )
    assert response.status_code == 403
