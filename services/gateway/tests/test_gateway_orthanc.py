"""Interoperability with Orthanc (another PACS): it stores to, queries and receives from us."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from gateway_helpers import eventually, free_port, run_dcmtk, sample_path, wait_for_port
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pydicom import dcmread

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Orthanc:
    """Orthanc 1.10 in a subprocess, loopback only (it listens on every interface: tests send
    it loopback traffic only), with TCP_NODELAY=1 as its own documentation recommends."""

    def __init__(self, directory: Path, gateway_port: int) -> None:
        self.directory = directory
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.gateway_port = gateway_port
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Orthanc:
        storage = self.directory / "storage"
        storage.mkdir(parents=True)
        config = {
            "Name": "orthanc-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"gateway": ["CLOUDPACS", "127.0.0.1", self.gateway_port]},
            "DicomScuTimeout": 30,
            "Plugins": [],
        }
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config))
        binary = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
        assert binary is not None, "Orthanc is not installed"
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        await wait_for_port(self.http_port, within_s=30)
        await wait_for_port(self.dicom_port, within_s=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    async def rest(self, method: str, path: str, body: bytes | dict[str, Any] | None = None) -> Any:
        """Call Orthanc's REST API on loopback; the decoded JSON answer."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )

        def call() -> Any:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")

        return await asyncio.to_thread(call)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> AsyncIterator[tuple[Any, Orthanc]]:
    """A gateway whose registry knows Orthanc both as a caller and as a destination."""
    gateway_port = free_port()
    async with Orthanc(tmp_path / "orthanc", gateway_port) as orthanc:
        registry = tmp_path / "registry.yaml"
        registry.write_text(
            textwrap.dedent(
                f"""
                tenants:
                  {tenant}:
                    sites:
                      main:
                        callers:
                          - ae_title: ORTHANC
                            networks: [127.0.0.0/8]
                          - ae_title: VIEWER
                            networks: [127.0.0.0/8]
                        destinations:
                          - ae_title: ORTHANC
                            host: 127.0.0.1
                            port: {orthanc.dicom_port}
                """
            )
        )
        gateway = await start_connected_gateway(
            dicom_port=gateway_port,
            site_registry=registry,
        )
        yield gateway, orthanc


async def test_orthanc_stores_queries_and_receives(stack, storage_app, tenant: str) -> None:
    gateway, orthanc = stack
    path = sample_path("MR_small_jpeg_ls_lossless.dcm")
    original = dcmread(path)

    # Orthanc -> gateway: C-STORE of an instance uploaded to Orthanc.
    uploaded = await orthanc.rest("POST", "/instances", path.read_bytes())
    echo = await orthanc.rest("POST", "/modalities/gateway/echo", {})
    assert echo == {}
    job = await orthanc.rest("POST", "/modalities/gateway/store", {"Resources": [uploaded["ID"]]})
    assert job["FailedInstancesCount"] == 0, job

    # kept alive by the name
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls())

    storage = StorageClient(channel)
    ref = instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=original.StudyInstanceUID,
        series_instance_uid=original.SeriesInstanceUID,
        sop_instance_uid=original.SOPInstanceUID,
    )
    info = await storage.head(ref)
    assert info.instance.sop_class_uid == original.SOPClassUID

    # Orthanc -> gateway: C-FIND at study level, once the instance is indexed.
    async def found() -> bool:
        query = await orthanc.rest(
            "POST",
            "/modalities/gateway/query",
            {"Level": "Study", "Query": {"PatientID": "4MR1", "StudyInstanceUID": ""}},
        )
        answers = await orthanc.rest("GET", f"/queries/{query['ID']}/answers?expand")
        return [a["0020,000d"]["Value"] for a in answers] == [original.StudyInstanceUID]

    assert await eventually(found, within_s=90)

    # Gateway -> Orthanc: C-MOVE to Orthanc after deleting its own copy.
    await orthanc.rest("DELETE", f"/instances/{uploaded['ID']}")
    assert await orthanc.rest("GET", "/instances") == []
    code, out = await run_dcmtk(
        "movescu", "-v", "-S", "-aet", "VIEWER", "-aec", "CLOUDPACS", "-aem", "ORTHANC",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
        "127.0.0.1", str(gateway.dicom_port),
    )  # fmt: skip
    assert code == 0, out
    assert "Received Final Move Response (Success)" in out, out
    instances = await orthanc.rest("GET", "/instances?expand")
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in instances] == [original.SOPInstanceUID]
    metadata = await orthanc.rest("GET", f"/instances/{instances[0]['ID']}/metadata?expand")
    assert metadata["TransferSyntax"] == original.file_meta.TransferSyntaxUID
    assert metadata["RemoteAET"] == "CLOUDPACS"
