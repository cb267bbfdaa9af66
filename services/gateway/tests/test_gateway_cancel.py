"""C-CANCEL of C-FIND and C-GET through the gateway, from DCMTK findscu and pynetdicom.

An SCU may cancel a C-FIND at any time (PS3.4 C.4.1.2.1); the SCP then interrupts matching and
answers Cancel (FE00), never Success, which would claim that every match was sent
(PS3.4 C.4.1.3.1). A C-GET SCP that receives a C-CANCEL interrupts its C-STORE sub-operations
and answers Cancel with the numbers of completed, failed and warning sub-operations
(PS3.4 C.4.3.3, statuses in C.4.3.1.4).

Where a C-CANCEL lands must not depend on which side runs faster, so each test holds the
gateway at a chosen point until the C-CANCEL has reached it: the index answers a page late
(findscu), the gateway's association sends a response late (pynetdicom C-FIND), or the C-GET
requestor cancels while it receives a sub-operation (the gateway waits for that C-STORE's
response anyway).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import (
    eventually,
    findscu,
    sample_path,
    stored_and_indexed,
)
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs_gateway.app import GatewayApp
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.c_find import Finder
from pacs_gateway.dimse.codes import STUDY_ROOT_FIND, STUDY_ROOT_GET
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

STUDIES = 25
CANCEL_AFTER = 3  # findscu --cancel: C-CANCEL once this many responses arrived
HOLD_S = 10  # a held gateway goes on after this long: the test then fails, it does not hang
C_FIND_RSP = 0x8020  # Command Field (PS3.7 Table E.1-1)


def _ct_copies(directory: Path, studies: int, instances: int = 1) -> list[Path]:
    """Copies of pydicom's CT_small.dcm as ``studies`` new studies of ``instances`` each."""
    directory.mkdir(parents=True, exist_ok=True)
    template = dcmread(sample_path("CT_small.dcm"))
    paths = []
    for s in range(studies):
        template.StudyInstanceUID = generate_uid()
        template.SeriesInstanceUID = generate_uid()
        for i in range(instances):
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = i + 1
            path = directory / f"s{s:02}i{i:02}.dcm"
            template.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


async def _stored(gateway: GatewayApp, paths: list[Path]) -> set[str]:
    """Store ``paths`` through the gateway and wait until the index has them; their SOP
    Instance UIDs."""
    return await stored_and_indexed(gateway.dicom_port, paths, calling="TESTSCU")


def _cancel_received(gateway: GatewayApp) -> bool:
    """True once one of the gateway's associations holds a C-CANCEL not yet acted upon."""
    return any(assoc.dimse.cancel_req for assoc in gateway.dimse.ae.active_associations)


def _study_query() -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    return identifier


async def _findscu(gateway: GatewayApp, out_dir: Path, *options: str) -> tuple[str, list[str]]:
    """findscu -v for every study (Study Root), responses written to ``out_dir``; its output
    and the Study Instance UIDs received."""
    out, responses = await findscu(
        gateway.dicom_port, out_dir, "-v", "-S", *options,
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
    )  # fmt: skip
    return out, [str(r.StudyInstanceUID) for r in responses]


async def test_findscu_cancel_ends_in_cancel_status_and_gateway_goes_on(
    start_connected_gateway, tenant: str, tmp_path: Path, monkeypatch
) -> None:
    """findscu --cancel 3 sends a C-CANCEL after the 3rd pending response; the index answers
    the 4th match only once that C-CANCEL has reached the gateway. The C-FIND ends with
    Cancel after exactly 3 matches (PS3.4 C.4.1.3.1), and the next C-FIND, on a new
    association, gets every match."""
    gateway = await start_connected_gateway(
        default_tenant=tenant,
        find_page_size=1,  # one index page per match: the 4th match is a page of its own
    )
    await _stored(gateway, _ct_copies(tmp_path / "studies", STUDIES))

    index_find = Finder.find
    held = threading.Event()  # only the first time: the C-FIND after it is not held

    async def cancel_received() -> bool:
        return _cancel_received(gateway)

    async def late_fourth_page(self: Finder, level: str, query: query_pb.Query) -> Any:
        if query.offset == CANCEL_AFTER and not held.is_set():
            held.set()
            await eventually(cancel_received, within_s=HOLD_S, interval=0.005)
        return await index_find(self, level, query)

    monkeypatch.setattr(Finder, "find", late_fourth_page)

    out, cancelled = await _findscu(gateway, tmp_path / "cancelled", "--cancel", str(CANCEL_AFTER))

    assert "Received Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)" in out, out
    assert "Received Final Find Response (Success)" not in out, out
    assert len(cancelled) == CANCEL_AFTER < STUDIES, out

    out, every = await _findscu(gateway, tmp_path / "after")
    assert "Received Final Find Response (Success)" in out, out
    assert len(every) == len(set(every)) == STUDIES
    assert set(cancelled) < set(every)


def _find_cancelled_after_first_pending(gateway: GatewayApp) -> tuple[list[int], list[int], bool]:
    """pynetdicom C-FIND of every study with a C-CANCEL after the first pending response,
    sent while the gateway holds its second pending response; then the same C-FIND again on
    the same association, then A-RELEASE.

    The gateway's association thread holds the second pending response (before it goes out)
    until the C-CANCEL has arrived, and the C-CANCEL leaves only once that thread is holding:
    so the gateway's next look for a C-CANCEL comes right after its second pending response,
    whatever the timing.

    Returns:
        The statuses of the cancelled C-FIND, those of the second one, and whether the
        association was released normally.
    """
    ae = AE(ae_title="CANCELSCU")  # not scu_find's title: its associations may linger
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="CLOUDPACS")
    assert assoc.is_established, "association not established"
    (acceptor,) = [  # the gateway's side of it
        a for a in gateway.dimse.ae.active_associations if a.requestor.ae_title == "CANCELSCU"
    ]
    pending_sent: list[int] = []
    holding = threading.Event()

    def hold(event: Any) -> None:
        """EVT_DIMSE_SENT, in the gateway's association thread before the PDUs go out."""
        command = event.message.command_set
        if command.CommandField != C_FIND_RSP or command.Status != codes.PENDING:
            return
        pending_sent.append(1)
        if len(pending_sent) == 2:
            holding.set()
            deadline = time.monotonic() + HOLD_S
            while not acceptor.dimse.cancel_req and time.monotonic() < deadline:
                time.sleep(0.005)

    acceptor.bind(evt.EVT_DIMSE_SENT, hold)
    try:
        cancelled = []
        for response, _identifier in assoc.send_c_find(_study_query(), STUDY_ROOT_FIND, msg_id=7):
            cancelled.append(int(response.Status))
            if len(cancelled) == 1:
                assert holding.wait(HOLD_S), "the gateway did not get to its second response"
                assoc.send_c_cancel(7, query_model=STUDY_ROOT_FIND)
        acceptor.unbind(evt.EVT_DIMSE_SENT, hold)
        again = [int(r.Status) for r, _ in assoc.send_c_find(_study_query(), STUDY_ROOT_FIND)]
    finally:
        assoc.release()
    return cancelled, again, assoc.is_released


@pytest.mark.parametrize(
    "page_size",
    [
        pytest.param(1, id="next-match-on-next-index-page"),
        pytest.param(500, id="next-match-on-same-index-page"),
    ],
)
async def test_pynetdicom_cancel_after_first_pending_ends_in_cancel(
    start_connected_gateway, tenant: str, tmp_path: Path, page_size: int
) -> None:
    """C-CANCEL after the first pending response, arriving while the gateway sends the
    second: the C-FIND ends with Cancel right after the second (PS3.4 C.4.1.3.1), whether
    the gateway would next fetch an index page or take the next match of the page it has;
    the association then answers a whole C-FIND and releases normally."""
    gateway = await start_connected_gateway(
        default_tenant=tenant,
        find_page_size=page_size,
    )
    await _stored(gateway, _ct_copies(tmp_path / "studies", 5))

    cancelled, again, released = await asyncio.to_thread(
        _find_cancelled_after_first_pending, gateway
    )

    assert cancelled == [codes.PENDING, codes.PENDING, codes.CANCEL]
    assert again == [codes.PENDING] * 5 + [codes.SUCCESS]
    assert released


def _get_cancelled_during_second_instance(
    gateway: GatewayApp, study: str
) -> tuple[list[tuple[Dataset, Dataset | None]], list[int], list[str], bool]:
    """pynetdicom C-GET of ``study``; C-CANCEL while receiving the second instance, after
    the first pending response. The gateway waits for that C-STORE's response, which leaves
    after the C-CANCEL on the same connection, so it has the C-CANCEL before the third.

    Returns:
        The C-GET responses (status, identifier), the statuses seen when the C-CANCEL was
        sent, the SOP Instance UIDs received, and whether the association was released
        normally.
    """
    responses: list[tuple[Dataset, Dataset | None]] = []
    seen_at_cancel: list[int] = []
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        if len(received) == 2:
            seen_at_cancel.extend(int(r.Status) for r, _ in responses)
            event.assoc.send_c_cancel(9, query_model=STUDY_ROOT_GET)
        return codes.SUCCESS

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        gateway.dicom_port,
        ae_title="CLOUDPACS",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established, "association not established"
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        responses.extend(assoc.send_c_get(identifier, STUDY_ROOT_GET, msg_id=9))
    finally:
        assoc.release()
    return responses, seen_at_cancel, received, assoc.is_released


async def test_pynetdicom_get_cancel_reports_sub_operation_counts(
    start_connected_gateway, tenant: str, tmp_path: Path
) -> None:
    """C-GET of a 5-instance study cancelled after the first pending response: the final
    response is Cancel with 2 completed, 3 remaining, no failed or warning sub-operations,
    and an empty Failed SOP Instance UID List (PS3.4 C.4.3.3, C.4.3.1.3.2)."""
    gateway = await start_connected_gateway(
        default_tenant=tenant,
    )
    paths = _ct_copies(tmp_path / "study", 1, instances=5)
    stored = await _stored(gateway, paths)
    study = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)

    responses, seen_at_cancel, received, released = await asyncio.to_thread(
        _get_cancelled_during_second_instance, gateway, study
    )

    assert seen_at_cancel == [codes.PENDING]
    assert [int(r.Status) for r, _ in responses] == [codes.PENDING] * 2 + [codes.CANCEL]
    final, failed = responses[-1]
    assert int(final.NumberOfCompletedSuboperations) == 2
    assert int(final.NumberOfRemainingSuboperations) == 3
    assert int(final.NumberOfFailedSuboperations) == 0
    assert int(final.NumberOfWarningSuboperations) == 0
    assert failed is not None and not failed.FailedSOPInstanceUIDList
    assert len(received) == len(set(received)) == 2
    assert set(received) < stored
    assert released
