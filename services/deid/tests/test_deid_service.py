"""DeidService through a real gRPC channel with mutual TLS and hydra's tokens, over real
storage, S3 and Kafka: a streamed instance, stored studies as a long-running operation, the
re-identification map and its audit event, refusals, and pseudonyms that hold across runs and
across two service instances."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path

import grpc
import pytest
from deid_fixtures import deid_client, deid_settings, instance, ref_of, storage_client
from deid_kafka import wait_for_event
from pacs.events.v1 import deid_events_pb2 as events_pb
from pacs_common.auth import Role
from pacs_common.errors import PacsError
from pacs_deid.operations import TOPIC_DEID
from pacs_deid.options import parse_options
from pacs_deid.profile import Profile
from pacs_deid.residuals import violations
from pacs_storage.app import StorageApp
from pacs_testkit.hydra import Hydra
from pydicom import dcmread
from pydicom.uid import generate_uid


async def test_streamed_instance(
    start_deid, hydra: Hydra, tenant: str, target_tenant: str, tmp_path: Path
) -> None:
    app = await start_deid(deid_settings(tenant, target_tenant, tmp_path))
    client = deid_client(app, hydra, tenant, [Role.RETRIEVE])
    patient = f"MRN{uuid.uuid4().hex[:8]}"
    source = instance(generate_uid(), generate_uid(), patient)
    report, data = await client.deidentify_instance("research", source)
    ds = dcmread(io.BytesIO(data))
    assert not violations(ds, Profile(frozenset()))
    assert ds.SOPInstanceUID == report.sop_instance_uid and report.sop_instance_uid.startswith(
        "2.25."
    )
    assert report.patient_pseudonym == ds.PatientID != patient
    assert patient.encode() not in data and b"Doe^Jane" not in data
    assert list(report.method_codes) == ["113100"]
    assert report.actions["X"] > 0
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


async def test_refusals(
    start_deid, hydra: Hydra, tenant: str, target_tenant: str, tmp_path: Path
) -> None:
    app = await start_deid(deid_settings(tenant, target_tenant, tmp_path))
    client = deid_client(app, hydra, tenant, [Role.RETRIEVE])
    good = instance(generate_uid(), generate_uid(), "MRN1")
    cases = [
        (
            client.deidentify_instance("research", b"not dicom at all"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            client.deidentify_instance("research", good, ["retain_everything"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (client.deidentify_instance("nosuch", good), grpc.StatusCode.NOT_FOUND),
        (
            client.deidentify_instance(
                "research", instance(generate_uid(), generate_uid(), "M", BurnedInAnnotation="YES")
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            deid_client(
                app, hydra, f"o{uuid.uuid4().hex[:8]}", [Role.RETRIEVE]
            ).deidentify_instance("research", good),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            # A missing role is refused by the interceptor before any message is read: tested
            # on a unary call, where the status cannot be lost to a client still writing.
            deid_client(app, hydra, tenant, [Role.QUERY]).deidentify_studies("research", ["1.2"]),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (client.reidentify("research", "ANON0000"), grpc.StatusCode.PERMISSION_DENIED),
    ]
    for call, code in cases:
        with pytest.raises(PacsError) as raised:
            await call
        assert raised.value.code == code
    # The service still works after every refusal.
    report, _ = await client.deidentify_instance("research", good)
    assert report.sop_instance_uid.startswith("2.25.")


async def test_pseudonyms_hold_across_runs_and_instances(
    start_deid, hydra: Hydra, tenant: str, target_tenant: str, tmp_path: Path
) -> None:
    first = await start_deid(deid_settings(tenant, target_tenant, tmp_path))
    second = await start_deid(deid_settings(tenant, target_tenant, tmp_path))
    study, series = generate_uid(), generate_uid()
    files = [instance(study, series, "MRN-CONSISTENT") for _ in range(3)]
    options = ["retain_long_modified_dates"]
    runs = []
    for app in (first, first, second):
        client = deid_client(app, hydra, tenant, [Role.RETRIEVE])
        runs.append([await client.deidentify_instance("research", f, options) for f in files])
    outputs = [[data for _, data in run] for run in runs]
    assert outputs[0] == outputs[1] == outputs[2]  # byte-identical across runs and instances
    datasets = [dcmread(io.BytesIO(d)) for d in outputs[0]]
    assert len({d.StudyInstanceUID for d in datasets}) == 1  # one study stays one study
    assert len({d.SOPInstanceUID for d in datasets}) == 3
    assert len({d.PatientID for d in datasets}) == 1
    assert datasets[0].StudyDate != dcmread(io.BytesIO(files[0])).StudyDate

    other_key = deid_settings(
        tenant, target_tenant, tmp_path, project={"key": "another-project-key-98765"}
    )
    third = await start_deid(other_key)
    _, data = await deid_client(third, hydra, tenant, [Role.RETRIEVE]).deidentify_instance(
        "research", files[0], options
    )
    assert dcmread(io.BytesIO(data)).StudyInstanceUID != datasets[0].StudyInstanceUID


async def test_study_operation_into_target_tenant(
    start_deid,
    storage_app: StorageApp,
    hydra: Hydra,
    tenant: str,
    target_tenant: str,
    tmp_path: Path,
) -> None:
    storage = storage_client(storage_app)
    study, series = generate_uid(), generate_uid()
    files = [instance(study, series, f"MRN{uuid.uuid4().hex[:6]}") for _ in range(4)]
    for data in files:
        await storage.put(ref_of(data, tenant), data)
    app = await start_deid(
        deid_settings(tenant, target_tenant, tmp_path, storage_port=storage_app.grpc_port)
    )
    client = deid_client(app, hydra, tenant, [Role.RETRIEVE])
    operation = await client.deidentify_studies("research", [study], ["retain_uids"])
    assert operation.name.startswith("operations/") and operation.target_tenant == target_tenant
    deadline = time.monotonic() + 120
    while not operation.done and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        operation = await client.get_operation(operation.name)
    assert operation.done and operation.completed == 4 and operation.failed == 0, operation
    copies = [info async for info in storage.list_all(target_tenant)]
    assert len(copies) == 4
    assert {c.instance.study_instance_uid for c in copies} == {study}  # Retain UIDs kept it
    for info in copies:
        ds = dcmread(io.BytesIO(await storage.get(info.instance)))
        assert not violations(ds, Profile(parse_options(["retain_uids"])))
    event = await wait_for_event(
        TOPIC_DEID,
        events_pb.InstanceDeidentified,
        lambda e: e.target.tenant == target_tenant,  # type: ignore[attr-defined]
    )
    assert list(event.method_codes) == ["113100", "113110"]  # type: ignore[attr-defined]
    # Another tenant cannot see the operation.
    other = deid_client(app, hydra, target_tenant, [Role.RETRIEVE])
    with pytest.raises(PacsError) as raised:
        await other.get_operation(operation.name)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


async def test_reidentification_is_audited(
    start_deid, hydra: Hydra, tenant: str, target_tenant: str, tmp_path: Path
) -> None:
    app = await start_deid(deid_settings(tenant, target_tenant, tmp_path))
    client = deid_client(app, hydra, tenant, [Role.RETRIEVE])
    patient = f"MRN{uuid.uuid4().hex[:8]}"
    source = instance(generate_uid(), generate_uid(), patient)
    report, _ = await client.deidentify_instance("research", source)
    admin = deid_client(app, hydra, tenant, [Role.ADMIN])
    answer = await admin.reidentify("research", report.patient_pseudonym, reason="IRB 42")
    assert answer.kind == "patient" and answer.original == patient
    assert answer.original_name == "Doe^Jane"
    uid = await admin.reidentify("research", report.study_instance_uid)
    assert uid.kind == "uid" and uid.original == dcmread(io.BytesIO(source)).StudyInstanceUID
    event = await wait_for_event(
        TOPIC_DEID,
        events_pb.ReidentificationPerformed,
        lambda e: e.pseudonym == report.patient_pseudonym,  # type: ignore[attr-defined]
    )
    assert event.reason == "IRB 42" and event.found and event.tenant == tenant  # type: ignore[attr-defined]
    # The map is encrypted at rest: the original is nowhere in the database file.
    database = await asyncio.to_thread(
        Path(app.settings.database_url.removeprefix("sqlite:///")).read_bytes
    )
    assert patient.encode() not in database
