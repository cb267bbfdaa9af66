"""Association handling: who gets in, C-ECHO, socket options, and refusals before storage."""

from __future__ import annotations

import asyncio
import socket
import time
from io import BytesIO

from gateway_helpers import (
    closed_port,
    run_dcmtk,
    sample_path,
    scu_associate,
    scu_store_dataset,
    scu_store_files,
)
from pacs_gateway.dimse import codes
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode


async def test_echoscu_gets_success(start_gateway) -> None:
    app = await start_gateway()
    code, out = await run_dcmtk(
        "echoscu", "-v", "-aet", "MODALITY1", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port)
    )
    assert code == 0, out
    assert "Received Echo Response (Success)" in out


async def test_pynetdicom_echo_gets_success(start_gateway) -> None:
    app = await start_gateway()

    def echo() -> int:
        assoc = scu_associate(app.dicom_port)
        assert assoc.is_established
        try:
            return int(assoc.send_c_echo().Status)
        finally:
            assoc.release()

    assert await asyncio.to_thread(echo) == 0x0000


async def test_caller_outside_allowed_networks_is_rejected(start_gateway) -> None:
    app = await start_gateway(allowed_networks=["10.0.0.0/8"])

    assoc = await asyncio.to_thread(scu_associate, app.dicom_port)

    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert rejection.result == 0x01  # rejected-permanent
    assert rejection.result_source == 0x01  # DICOM UL service-user
    assert rejection.diagnostic == 0x01  # no-reason-given (PS3.8 Table 9-21)


async def test_echoscu_from_disallowed_network_fails(start_gateway) -> None:
    app = await start_gateway(allowed_networks=["192.168.0.0/16"])
    code, out = await run_dcmtk("echoscu", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port))
    assert code != 0
    assert "Association Rejected" in out


async def test_wrong_called_ae_title_is_rejected(start_gateway) -> None:
    app = await start_gateway()
    assoc = await asyncio.to_thread(scu_associate, app.dicom_port, "TESTSCU", "SOMEONEELSE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x07  # called-AE-title-not-recognized


async def test_accepted_sockets_have_tcp_nodelay(start_gateway) -> None:
    app = await start_gateway()
    assoc = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert assoc.is_established
    try:
        server_side = [a for a in app.dimse.ae.active_associations if a.is_acceptor]
        assert len(server_side) == 1
        sock = server_side[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        await asyncio.to_thread(assoc.release)


async def test_storage_unreachable_answers_out_of_resources(start_gateway) -> None:
    app = await start_gateway(storage_target=f"127.0.0.1:{closed_port()}")
    _code, out = await run_dcmtk(
        "storescu",
        "-v",
        "-aet",
        "MODALITY1",
        "-aec",
        "CLOUDPACS",
        "127.0.0.1",
        str(app.dicom_port),
        sample_path("CT_small.dcm"),
    )
    assert "Received Store Response (Refused: OutOfResources)" in out, out


async def test_storage_unreachable_status_is_a700_for_pynetdicom(start_gateway) -> None:
    app = await start_gateway()
    statuses = await asyncio.to_thread(
        scu_store_files, app.dicom_port, [sample_path("CT_small.dcm")]
    )
    assert statuses == [codes.OUT_OF_RESOURCES]


async def test_invalid_uid_is_refused_with_cannot_understand(start_gateway) -> None:
    app = await start_gateway()
    dataset = dcmread(sample_path("CT_small.dcm"))
    dataset.StudyInstanceUID = "1.2.03.x"  # leading zero and a letter: not a UID (PS3.5 9.1)

    def send() -> tuple[int, str]:
        response = scu_store_dataset(app.dicom_port, dataset, ExplicitVRLittleEndian)
        return int(response.Status), str(response.get("ErrorComment", ""))

    code, comment = await asyncio.to_thread(send)
    assert code == codes.INVALID_IDENTIFIERS
    assert 0xC000 <= code <= 0xCFFF  # "Cannot understand" (PS3.4 B.2.3)
    assert "StudyInstanceUID" in comment


async def test_missing_series_uid_is_refused(start_gateway) -> None:
    app = await start_gateway()
    dataset = dcmread(sample_path("CT_small.dcm"))
    del dataset.SeriesInstanceUID

    def send() -> int:
        return int(scu_store_dataset(app.dicom_port, dataset, ExplicitVRLittleEndian).Status)

    assert await asyncio.to_thread(send) == codes.INVALID_IDENTIFIERS


async def test_sop_class_differing_from_command_is_a900(start_gateway) -> None:
    app = await start_gateway()
    dataset = dcmread(sample_path("CT_small.dcm"))  # CT Image Storage
    mr_storage = "1.2.840.10008.5.1.4.1.1.4"

    def send() -> int:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(mr_storage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="CLOUDPACS")
        assert assoc.is_established
        try:
            # A non-conformant sender: the command names MR Image Storage, the dataset is CT.
            request = C_STORE()
            request.MessageID = 1
            request.AffectedSOPClassUID = mr_storage
            request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
            request.Priority = 0x0002
            request.DataSet = BytesIO(encode(dataset, False, True))
            # pause pynetdicom's reactor the way send_c_store does, to read the response here
            assoc._reactor_checkpoint.clear()
            while not assoc._is_paused:
                time.sleep(0.001)
            assoc.dimse.send_msg(request, assoc.accepted_contexts[0].context_id)
            _, response = assoc.dimse.get_msg(block=True)
            assoc._reactor_checkpoint.set()
            return int(response.Status)
        finally:
            assoc.release()

    assert await asyncio.to_thread(send) == codes.DATASET_DOES_NOT_MATCH_SOP_CLASS


async def test_outgoing_associations_set_tcp_nodelay(start_gateway) -> None:
    """The sockets the gateway opens (C-MOVE, commitment reports) disable Nagle too."""
    from pacs_gateway.outbound import association_kwargs  # noqa: PLC0415
    from pacs_gateway.registry import Destination  # noqa: PLC0415
    from pynetdicom.presentation import build_context  # noqa: PLC0415

    app = await start_gateway()
    destination = Destination(ae_title="CLOUDPACS", host="127.0.0.1", port=app.dicom_port)

    def connect() -> int:
        ae = AE(ae_title="GATEWAYSCU")
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            **association_kwargs(destination, [build_context("1.2.840.10008.1.1")]),
        )
        assert assoc.is_established
        try:
            return int(assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            assoc.release()

    assert await asyncio.to_thread(connect) == 1
