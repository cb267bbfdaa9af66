"""Storage Commitment Push Model (PS3.4 J) with a pynetdicom SCU, against the real stack."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import (
    closed_port,
    eventually,
    free_port,
    sample_path,
    scu_association,
    scu_store_files,
    write_registry,
)
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import (
    NO_SUCH_OBJECT_INSTANCE,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
)
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _registry(path: Path, report_port: int, tenant: str) -> Path:
    return write_registry(
        path,
        {
            tenant: {
                "callers": [{"ae_title": "MODALITY", "networks": ["127.0.0.0/8"]}],
                "destinations": [
                    {"ae_title": "MODALITY", "host": "127.0.0.1", "port": report_port}
                ],
            }
        },
    )


def _request(references: list[tuple[str, str]]) -> Dataset:
    request = Dataset()
    request.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    request.ReferencedSOPSequence = items
    return request


class Reports:
    """N-EVENT-REPORTs received by the test SCU, on any association."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset, bool]] = []
        self.arrived = threading.Event()

    def handle(self, event: Any) -> tuple[int, None]:
        self.received.append((event.event_type, event.event_information, event.assoc.is_requestor))
        self.arrived.set()
        return 0x0000, None  # N-EVENT-REPORT response: (status, event reply)


async def _gateway(start_connected_gateway, tmp_path: Path, report_port: int, tenant: str) -> Any:
    registry = _registry(tmp_path / "registry.yaml", report_port, tenant)
    return await start_connected_gateway(
        site_registry=registry,
        commitment_wait_s=3,
    )


def _ask(port: int, request: Dataset, reports: Reports, keep_open: bool) -> int:
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handle)]
    with scu_association(port, STORAGE_COMMITMENT_PUSH, "MODALITY", handlers) as assoc:
        answer, _ = assoc.send_n_action(
            request, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
        )
        if keep_open:
            reports.arrived.wait(timeout=60)
        return int(answer.Status)


async def test_commitment_report_on_the_same_association(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    gateway = await _gateway(start_connected_gateway, tmp_path, free_port(), tenant)
    ct = dcmread(sample_path("CT_small.dcm"), stop_before_pixels=True)
    stored = await asyncio.to_thread(
        scu_store_files, gateway.dicom_port, [sample_path("CT_small.dcm")], "MODALITY"
    )
    assert stored == [codes.SUCCESS]
    missing = generate_uid()
    request = _request([(ct.SOPClassUID, ct.SOPInstanceUID), (ct.SOPClassUID, missing)])
    reports = Reports()

    answer = await asyncio.to_thread(_ask, gateway.dicom_port, request, reports, True)

    assert answer == codes.SUCCESS
    assert len(reports.received) == 1
    event_type, info, on_our_association = reports.received[0]
    assert event_type == 2  # failures exist (PS3.4 J.3.3)
    assert on_our_association
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [ct.SOPInstanceUID]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [
        (missing, NO_SUCH_OBJECT_INSTANCE)
    ]


async def test_commitment_report_on_a_new_association_after_release(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    reports = Reports()
    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
    report_port = free_port()
    server = listener.start_server(
        ("127.0.0.1", report_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)],
    )
    try:
        gateway = await _gateway(start_connected_gateway, tmp_path, report_port, tenant)
        mr = dcmread(sample_path("MR_small_jpeg_ls_lossless.dcm"), stop_before_pixels=True)
        stored = await asyncio.to_thread(
            scu_store_files,
            gateway.dicom_port,
            [sample_path("MR_small_jpeg_ls_lossless.dcm")],
            "MODALITY",
        )
        assert stored == [codes.SUCCESS]
        request = _request([(mr.SOPClassUID, mr.SOPInstanceUID)])

        answer = await asyncio.to_thread(_ask, gateway.dicom_port, request, reports, False)
        assert answer == codes.SUCCESS
        assert await asyncio.to_thread(reports.arrived.wait, 60)
    finally:
        server.shutdown()

    event_type, info, on_our_association = reports.received[0]
    assert event_type == 1  # all committed
    assert not on_our_association  # the gateway called back
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [mr.SOPInstanceUID]
    assert "FailedSOPSequence" not in info


async def test_commitment_request_without_transaction_uid_is_refused(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    gateway = await _gateway(start_connected_gateway, tmp_path, free_port(), tenant)
    request = Dataset()
    request.ReferencedSOPSequence = []
    answer = await asyncio.to_thread(_ask, gateway.dicom_port, request, Reports(), False)
    assert answer == 0x0120  # missing attribute (PS3.7 C.5)


async def test_commitment_requests_beyond_the_pool_are_refused_with_resource_limitation(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    """With one request in progress allowed: while the first waits for an instance that is
    never indexed, a second is refused with 0x0213 and nothing else changes."""
    registry = _registry(tmp_path / "registry.yaml", free_port(), tenant)
    gateway = await start_connected_gateway(
        site_registry=registry, commitment_wait_s=15, max_pending_commitments=1
    )
    never_stored = _request([(codes.SECONDARY_CAPTURE, generate_uid())])
    first = await asyncio.to_thread(_ask, gateway.dicom_port, never_stored, Reports(), False)
    second = await asyncio.to_thread(
        _ask, gateway.dicom_port, _request([(codes.SECONDARY_CAPTURE, generate_uid())]),
        Reports(), False,
    )  # fmt: skip
    assert first == codes.SUCCESS
    assert second == codes.RESOURCE_LIMITATION


async def test_a_report_not_delivered_is_sent_later_by_another_gateway(
    start_connected_gateway, tmp_path: Path, tenant: str
) -> None:
    """The request is kept in the index until its report is delivered: the first gateway
    cannot reach the caller (as if it had died before reporting), a second one takes the
    request over and reports it on a new association, once."""
    report_port = free_port()
    registry = _registry(tmp_path / "registry.yaml", report_port, tenant)
    first = await start_connected_gateway(
        site_registry=registry, commitment_wait_s=3, commitment_recovery_interval_s=0
    )
    ct = dcmread(sample_path("CT_small.dcm"), stop_before_pixels=True)
    stored = await asyncio.to_thread(
        scu_store_files, first.dicom_port, [sample_path("CT_small.dcm")], "MODALITY"
    )
    assert stored == [codes.SUCCESS]
    request = _request([(ct.SOPClassUID, ct.SOPInstanceUID)])
    reports = Reports()

    answer = await asyncio.to_thread(_ask, first.dicom_port, request, reports, False)
    assert answer == codes.SUCCESS

    async def first_gave_up() -> bool:  # its report found nobody listening
        return not first._commitment._workers  # type: ignore[union-attr]

    assert await eventually(first_gave_up, within_s=60)
    assert not reports.received

    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", report_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)],
    )
    try:
        second = await start_connected_gateway(
            site_registry=registry,
            commitment_wait_s=1,
            query_timeout=1,
            commitment_recovery_margin_s=0,
            commitment_recovery_interval_s=3600,  # passes run below, when the test asks
        )

        async def reported() -> bool:
            await second.recover_commitments()
            return bool(reports.received)

        assert await eventually(reported, within_s=60)
        assert await second.recover_commitments() == 0  # forgotten once delivered
    finally:
        server.shutdown()

    assert len(reports.received) == 1
    event_type, info, on_our_association = reports.received[0]
    assert event_type == 1  # all committed
    assert not on_our_association
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [ct.SOPInstanceUID]


async def test_a_request_that_cannot_be_recorded_is_refused_with_resource_limitation(
    start_gateway, tmp_path: Path, tenant: str
) -> None:
    """Nothing is accepted that a restart could lose: with the index unreachable the N-ACTION
    is answered 0x0213 and the modality asks again later (PS3.4 J.3.2)."""
    registry = _registry(tmp_path / "registry.yaml", free_port(), tenant)
    gateway = await start_gateway(
        site_registry=registry,
        indexer_target=f"127.0.0.1:{closed_port()}",
        query_timeout=2,
        commitment_recovery_interval_s=0,
    )
    request = _request([(codes.SECONDARY_CAPTURE, generate_uid())])
    answer = await asyncio.to_thread(_ask, gateway.dicom_port, request, Reports(), False)
    assert answer == codes.RESOURCE_LIMITATION
