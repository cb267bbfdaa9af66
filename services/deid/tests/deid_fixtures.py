"""Helpers of the de-identification service tests (imported by name: a module called
``conftest`` would collide with the other suites' when they run together)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pydicom.data
from cryptography.fernet import Fernet
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Role
from pacs_common.clients.deid import DeidClient
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pacs_deid.app import DeidApp
from pacs_deid.settings import DeidSettings
from pacs_storage.app import StorageApp
from pacs_testkit.hydra import Hydra
from pydicom import dcmread
from pydicom.uid import generate_uid

PROJECT_KEY = "research-project-key-0123456789"
CT = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"


def deid_settings(
    tenant: str, target: str, tmp_path: Path, storage_port: int = 0, **extra: Any
) -> DeidSettings:
    """Settings of an in-process service with one project ``research`` fed by ``tenant``."""
    project: dict[str, Any] = {
        "source_tenants": [tenant],
        "target_tenant": target,
        "key": PROJECT_KEY,
        "reidentification_map": True,
    }
    project.update(extra.pop("project", {}))
    return DeidSettings(
        grpc_port=0,
        shutdown_grace_s=1,
        storage_target=f"127.0.0.1:{storage_port}",
        database_url=f"sqlite:///{tmp_path}/deid-{uuid.uuid4().hex[:6]}.sqlite",
        reid_key=Fernet.generate_key().decode(),
        projects={"research": project},
        kafka=KafkaSettings(),
        **extra,
    )


def instance(study: str, series: str, patient: str, **attributes: str) -> bytes:
    """CT_small with a patient, study and series of the test's own."""
    ds = dcmread(CT)
    ds.PatientID = patient
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = "ACC" + patient[-6:]
    for key, value in attributes.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ref_of(data: bytes, tenant: str) -> instance_pb2.InstanceRef:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )


def deid_client(app: DeidApp, hydra: Hydra, tenant: str, roles: list[Role]) -> DeidClient:
    """A client of ``app`` with a token of ``tenant`` and ``roles``."""
    channel = open_channel(
        f"127.0.0.1:{app.grpc_port}",
        client_tls(),
        interceptors=bearer_interceptors(hydra.client(tenant, roles)),
    )
    return DeidClient(channel, timeout=120)


def storage_client(app: StorageApp) -> StorageClient:
    """A client of the storage service (as ``cli``)."""
    return StorageClient(open_channel(f"127.0.0.1:{app.grpc_port}", client_tls()), timeout=60)
