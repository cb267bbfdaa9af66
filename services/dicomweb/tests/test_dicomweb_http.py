"""The HTTP surface: bearer tokens and the loopback rule, CORS preflight, gzip of JSON,
the capabilities description."""

from __future__ import annotations

import asyncio
import gzip
import io
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import eventually, series_from
from pydicom.uid import generate_uid

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _get(url: str, **headers: str) -> requests.Response:
    return await asyncio.to_thread(requests.get, url, headers=headers, timeout=30)


async def test_tokens_decide_tenant_and_roles(dicomweb_app: Any, hydra: Any, tenant: str) -> None:
    url = f"{dicomweb_app.url}/studies"
    assert (await _get(url, Authorization="Bearer not-a-jwt")).status_code == 401
    assert (await _get(url, Authorization="Basic dXNlcjpwYXNz")).status_code == 401
    ingest_only = hydra.token(tenant, ["ingest"])
    assert (await _get(url, Authorization=f"Bearer {ingest_only}")).status_code == 403
    reader = hydra.token(tenant, ["query"])
    assert (await _get(url, Authorization=f"Bearer {reader}")).status_code == 200


async def test_loopback_without_token_acts_in_the_default_tenant(
    dicomweb_app: Any, storage_app: Any, indexer_app: Any
) -> None:
    study = generate_uid()
    objects = series_from("CT_small.dcm", 1, study_uid=study)
    loopback = DICOMwebClient(url=dicomweb_app.url)  # no token
    await asyncio.to_thread(loopback.store_instances, [pydicom.dcmread(io.BytesIO(objects[0]))])

    async def found() -> bool:
        hits = await asyncio.to_thread(
            loopback.search_for_studies, search_filters={"StudyInstanceUID": study}
        )
        return len(hits) == 1

    assert await eventually(found)
    # With the setting off (as in the chart), the same caller is refused.
    from pacs_dicomweb.app import create_app  # noqa: PLC0415
    from pacs_dicomweb.settings import DicomwebSettings  # noqa: PLC0415

    strict = create_app(
        DicomwebSettings(
            http_port=0,
            grpc_port=0,
            storage_target=f"127.0.0.1:{storage_app.grpc_port}",
            indexer_target=f"127.0.0.1:{indexer_app.grpc_port}",
            loopback_default_tenant=False,
            shutdown_grace_s=1,
        )
    )
    await strict.start()
    try:
        refused = await _get(f"{strict.url}/studies")
    finally:
        await strict.stop()
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_cors_preflight_allows_accept_and_authorization(dicomweb_app: Any) -> None:
    response = await asyncio.to_thread(
        requests.options,
        f"{dicomweb_app.url}/studies",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, authorization",
        },
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://viewer.example"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "accept" in allowed and "authorization" in allowed
    other = await asyncio.to_thread(
        requests.options,
        f"{dicomweb_app.url}/studies",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert other.status_code == 400


async def test_json_is_gzipped_when_accepted(
    client: DICOMwebClient, store: Any, dicomweb_app: Any, token: str
) -> None:
    study = generate_uid()
    await store(series_from("CT_small.dcm", 6, study_uid=study))
    url = f"{dicomweb_app.url}/studies/{study}/metadata"

    def fetch_raw() -> tuple[Any, bytes]:
        # The body is read in this thread: the server runs in the test's event loop.
        with requests.get(
            url,
            headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"},
            timeout=30,
            stream=True,
        ) as reply:
            return reply.headers, reply.raw.read()

    headers, compressed = await asyncio.to_thread(fetch_raw)
    assert headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(compressed)
    assert body.startswith(b"[{") and body.count(b'"00080018"') == 6
    plain = await _get(url, Authorization=f"Bearer {token}", **{"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == body


async def test_capabilities(dicomweb_app: Any) -> None:
    for path in ("/", "/capabilities"):
        response = await _get(dicomweb_app.url + path)
        assert response.status_code == 200
        description = response.json()
        assert set(description["resources"]) == {"STOW-RS", "QIDO-RS", "WADO-RS"}
