"""WADO-RS retrieval through dicomweb-client and raw HTTP: instances (as stored or decoded),
frames, bulk data with ranges, rendered and thumbnail, on the real stack."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import part10, series_from
from PIL import Image
from pydicom.uid import generate_uid

pytestmark = pytest.mark.asyncio(loop_scope="session")

EVRLE = "1.2.840.10008.1.2.1"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
# Cornerstone's WADO-RS image loader, verbatim (cornerstone3D wadors/loadImage.ts).
CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _uids(data: bytes) -> tuple[str, str, str]:
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID


async def test_study_series_instance_as_stored(client: DICOMwebClient, store: Any) -> None:
    study = generate_uid()
    objects = series_from("CT_small.dcm", 3, study_uid=study) + series_from(
        "MR_small_jp2klossless.dcm", 2, study_uid=study
    )
    await store(objects)
    by_uid = {_uids(o)[2]: o for o in objects}
    retrieved = await asyncio.to_thread(
        client.retrieve_study, study, media_types=(("application/dicom", "*"),)
    )
    assert len(retrieved) == 5
    for dataset in retrieved:
        original = pydicom.dcmread(io.BytesIO(by_uid[dataset.SOPInstanceUID]))
        assert dataset.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert dataset.PixelData == original.PixelData
    # Streamed (chunked) reading, as dicomweb-client's iter_* methods do.
    streamed = await asyncio.to_thread(
        lambda: [
            d.SOPInstanceUID
            for d in client.iter_study(study, media_types=(("application/dicom", "*"),))
        ]
    )
    assert sorted(streamed) == sorted(by_uid)
    _, series, sop = _uids(objects[3])
    series_items = await asyncio.to_thread(
        client.retrieve_series, study, series, media_types=(("application/dicom", "*"),)
    )
    assert {d.SOPInstanceUID for d in series_items} == {_uids(o)[2] for o in objects[3:]}
    one = await asyncio.to_thread(
        client.retrieve_instance, study, series, sop, media_types=(("application/dicom", "*"),)
    )
    assert one.file_meta.TransferSyntaxUID == J2K_LOSSLESS


async def test_default_syntax_decodes_to_explicit_little_endian(
    client: DICOMwebClient, store: Any
) -> None:
    objects = series_from("MR_small_jp2klossless.dcm", 1)
    await store(objects)
    study, series, sop = _uids(objects[0])
    # No transfer-syntax parameter: PS3.18 8.7.3.5 says Explicit VR Little Endian.
    instance = await asyncio.to_thread(
        client.retrieve_instance, study, series, sop, media_types=("application/dicom",)
    )
    assert instance.file_meta.TransferSyntaxUID == EVRLE
    expected = pydicom.dcmread(io.BytesIO(objects[0])).pixel_array
    assert np.array_equal(instance.pixel_array, expected)  # lossless: bit exact


async def test_frames_as_stored_for_cornerstone_and_decoded_by_default(
    dicomweb_app: Any, client: DICOMwebClient, store: Any, token: str
) -> None:
    objects = series_from("MR_small_jp2klossless.dcm", 1)
    await store(objects)
    study, series, sop = _uids(objects[0])
    url = f"{dicomweb_app.url}/studies/{study}/series/{series}/instances/{sop}/frames/1"
    headers = {"Authorization": f"Bearer {token}", "Accept": CORNERSTONE_ACCEPT}
    response = await asyncio.to_thread(requests.get, url, headers=headers, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("multipart/related")
    # The part names the stored syntax, which the loader picks its decoder by.
    assert f"transfer-syntax={J2K_LOSSLESS}".encode() in response.content
    original = pydicom.dcmread(io.BytesIO(objects[0]))
    codestream = pydicom.encaps.get_frame(original.PixelData, 0, number_of_frames=1)
    assert codestream in response.content
    # dicomweb-client's default (application/octet-stream): decoded, native bytes.
    frames = await asyncio.to_thread(
        client.retrieve_instance_frames,
        study,
        series,
        sop,
        [1],
        media_types=(("application/octet-stream", EVRLE),),
    )
    assert (
        frames[0] == original.pixel_array.astype("<i2").tobytes()
        or frames[0] == original.pixel_array.tobytes()
    )
    # A syntax we cannot produce: 406.
    refused = await asyncio.to_thread(
        requests.get,
        url,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80',
        },
        timeout=30,
    )
    assert refused.status_code == 406


async def test_multiframe_frames_and_bad_frame_numbers(
    dicomweb_app: Any, client: DICOMwebClient, store: Any, token: str
) -> None:
    objects = series_from("SC_rgb_rle_2frame.dcm", 1)
    await store(objects)
    study, series, sop = _uids(objects[0])
    original = pydicom.dcmread(io.BytesIO(objects[0]))
    frames = await asyncio.to_thread(
        client.retrieve_instance_frames,
        study,
        series,
        sop,
        [2, 1],
        media_types=(("application/octet-stream", "*"),),
    )
    assert frames == [
        pydicom.encaps.get_frame(original.PixelData, 1, number_of_frames=2),
        pydicom.encaps.get_frame(original.PixelData, 0, number_of_frames=2),
    ]
    url = f"{dicomweb_app.url}/studies/{study}/series/{series}/instances/{sop}/frames/3"
    missing = await asyncio.to_thread(
        requests.get, url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert missing.status_code == 404


async def test_bulk_data_with_range(
    dicomweb_app: Any, client: DICOMwebClient, store: Any, token: str
) -> None:
    objects = series_from("CT_small.dcm", 1)
    await store(objects)
    study, series, sop = _uids(objects[0])
    metadata = await asyncio.to_thread(client.retrieve_instance_metadata, study, series, sop)
    uri = metadata["7FE00010"]["BulkDataURI"]
    pixel_bytes = pydicom.dcmread(io.BytesIO(objects[0])).PixelData
    whole = await asyncio.to_thread(client.retrieve_bulkdata, uri)
    assert whole == [pixel_bytes]
    part = await asyncio.to_thread(client.retrieve_bulkdata, uri, byte_range=(100, 199))
    assert part == [pixel_bytes[100:200]]
    response = await asyncio.to_thread(
        requests.get,
        uri,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/octet-stream",
            "Range": "bytes=-16",
        },
        timeout=30,
    )
    assert response.status_code == 206
    assert (
        response.headers["content-range"]
        == f"bytes {len(pixel_bytes) - 16}-{len(pixel_bytes) - 1}/{len(pixel_bytes)}"
    )
    assert response.content == pixel_bytes[-16:]
    beyond = await asyncio.to_thread(
        requests.get,
        uri,
        headers={"Authorization": f"Bearer {token}", "Range": f"bytes={len(pixel_bytes)}-"},
        timeout=30,
    )
    assert beyond.status_code == 416


async def test_rendered_and_thumbnail(
    dicomweb_app: Any, client: DICOMwebClient, store: Any, token: str
) -> None:
    objects = series_from("CT_small.dcm", 3)
    await store(objects)
    study, series, sop = _uids(objects[0])
    jpeg = await asyncio.to_thread(
        client.retrieve_instance_rendered, study, series, sop, media_types=("image/jpeg",)
    )
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (128, 128)
    assert np.asarray(image).std() > 10  # an image, not a flat canvas
    # A narrow window saturates more pixels than the image's own window does.
    png = await asyncio.to_thread(
        client.retrieve_instance_rendered,
        study,
        series,
        sop,
        media_types=("image/png",),
        params={"window": "0,10,linear"},
    )
    narrow = np.asarray(Image.open(io.BytesIO(png)))
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert np.isin(narrow, (0, 255)).mean() > np.isin(np.asarray(image), (0, 255)).mean()
    series_jpeg = await asyncio.to_thread(
        client.retrieve_series_rendered, study, series, media_types=("image/jpeg",)
    )
    assert Image.open(io.BytesIO(series_jpeg)).format == "JPEG"
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/studies/{study}", f"/studies/{study}/series/{series}"):
        thumb = await asyncio.to_thread(
            requests.get,
            f"{dicomweb_app.url}{path}/thumbnail?viewport=64,64",
            headers={**headers, "Accept": "image/jpeg"},
            timeout=30,
        )
        assert thumb.status_code == 200, path
        assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)


async def test_rendered_uses_the_images_own_window(store: Any, client: DICOMwebClient) -> None:
    plain = series_from("CT_small.dcm", 1)[0]
    windowed_ds = pydicom.dcmread(io.BytesIO(series_from("CT_small.dcm", 1)[0]))
    windowed_ds.WindowCenter, windowed_ds.WindowWidth = 40, 80  # a narrow soft-tissue window
    windowed = part10(windowed_ds)
    await store([plain, windowed])
    rendered = []
    for data in (plain, windowed):
        png = await asyncio.to_thread(
            client.retrieve_instance_frames_rendered,
            *_uids(data),
            [1],
            media_types=("image/png",),
        )
        image = Image.open(io.BytesIO(png))
        assert image.mode == "L"
        rendered.append(np.asarray(image))
    # Without a window: min/max, few saturated pixels; with the image's narrow one: many.
    assert np.isin(rendered[1], (0, 255)).mean() > np.isin(rendered[0], (0, 255)).mean() + 0.1


async def test_frames_of_a_restored_instance_are_never_stale(
    client: DICOMwebClient, store: Any, storage_client: Any, tenant: str
) -> None:
    objects = series_from("CT_small.dcm", 1)
    await store(objects)
    study, series, sop = _uids(objects[0])
    media = (("application/octet-stream", "*"),)
    first = await asyncio.to_thread(
        client.retrieve_instance_frames, study, series, sop, [1], media_types=media
    )
    assert first[0] == pydicom.dcmread(io.BytesIO(objects[0])).PixelData
    # The same instance stored again with other pixels (a new version in storage).
    changed = pydicom.dcmread(io.BytesIO(objects[0]))
    changed.PixelData = bytes(len(changed.PixelData))
    from pacs_common.dicom import instance_ref_of  # noqa: PLC0415

    data = part10(changed)
    await storage_client.put(instance_ref_of(data, tenant), data)
    second = await asyncio.to_thread(
        client.retrieve_instance_frames, study, series, sop, [1], media_types=media
    )
    assert second[0] == changed.PixelData
