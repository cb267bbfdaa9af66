"""Done-when: a TID 1500 report (written by highdicom) stored through the gateway has its
measurements queryable through QueryService, renders as text, and its ORU^R01 reaches a
listening MLLP peer, resent until the peer acknowledges it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest
from hl7.mllp import start_hl7_server
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_testkit.channels import plain_aio_channel
from pydicom.uid import generate_uid
from pynetdicom import AE
from sr_helpers import tid1500_report
from test_hl7_worklist_e2e import _dcmtk, _run

pytestmark = pytest.mark.asyncio(loop_scope="session")

CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _store_all(port: int, datasets: list[Any]) -> None:
    ae = AE(ae_title="MODALITY")
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
    finally:
        assoc.release()


class OruPeer:
    """A RIS stand-in built on python-hl7's asyncio MLLP server: answers AR to the first
    ``refuse`` messages, then AA, keeping what it received."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.received: list[hl7.Message] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await start_hl7_server(self._client, host="127.0.0.1", port=0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                self.received.append(message)
                code = "AR" if len(self.received) <= self.refuse else "AA"
                writer.writemessage(message.create_ack(code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_tid1500_measurements_queryable_and_oru_reaches_peer(
    start_hl7, gateway_factory, indexer_app, tenant: str, tmp_path: Path
) -> None:
    peer = OruPeer(refuse=1)
    peer_port = await peer.start()
    try:
        await start_hl7(default_tenant=tenant, oru_host="127.0.0.1", oru_port=peer_port)
        gateway = await gateway_factory(default_tenant=tenant)
        image = pydicom.dcmread(CT)
        image.PatientID = "PAT-SR1"
        image.AccessionNumber = "ACC-SR1"
        image.StudyInstanceUID = generate_uid()
        image.SeriesInstanceUID = generate_uid()
        image.SOPInstanceUID = generate_uid()
        image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
        report = tid1500_report(image, length_mm=12.5)
        report_path = tmp_path / "sr.dcm"
        report.save_as(report_path)
        # DCMTK reads the report highdicom wrote (an independent SR parser)
        code, dump = await _run(_dcmtk("dsrdump"), report_path)
        assert code == 0 and '"Length")="12.5" (mm,UCUM' in dump, dump
        # PixelMed's template validator (another implementation) finds TID 1500 complete
        code, verdict = await _run(
            "java",
            "-Djdk.xml.xpathExprOpLimit=0",  # its XSLT exceeds the JDK's default XPath limits
            "-Djdk.xml.xpathExprGrpLimit=0",
            "-Djdk.xml.xpathTotalOpLimit=0",
            "-cp",
            "/usr/share/java/pixelmed.jar:/usr/share/java/commons-codec.jar",
            "com.pixelmed.validate.DicomSRValidator",
            report_path,
        )
        assert "Found Root Template TID_1500" in verdict, verdict
        assert "Error" not in verdict, verdict
        code, html = await _run(_dcmtk("dsr2html"), report_path)
        assert code == 0 and "12.5 mm" in html, html[:2000]
        await asyncio.to_thread(
            _store_all, gateway.dicom_port, [image, pydicom.dcmread(report_path)]
        )

        channel = plain_aio_channel(f"127.0.0.1:{indexer_app.grpc_port}")
        stub = query_grpc.QueryServiceStub(channel)
        deadline = time.monotonic() + 180  # generous: a loaded machine can stall a consumer group
        found: list[query_pb.MeasurementRecord] = []
        while time.monotonic() < deadline and not found:
            response = await stub.FindMeasurements(
                query_pb.FindMeasurementsRequest(tenant=tenant, patient_id="PAT-SR1")
            )
            found = list(response.measurements)
            await asyncio.sleep(0.1)
        assert len(found) == 1
        m = found[0].measurement
        assert (m.concept_code_value, m.concept_code_scheme, m.concept_code_meaning) == (
            "410668003",
            "SCT",
            "Length",
        )
        assert (m.value, m.units_code_value) == ("12.5", "mm")
        assert m.finding_site == "Lung"
        assert m.tracking_identifier == "Lesion 1"
        assert list(m.referenced_sop_instance_uids) == [image.SOPInstanceUID]
        assert found[0].report.sop_instance_uid == report.SOPInstanceUID
        # by concept: another concept finds nothing
        other = await stub.FindMeasurements(
            query_pb.FindMeasurementsRequest(tenant=tenant, concept_code_value="81827009")
        )
        assert list(other.measurements) == []

        text = (
            await stub.GetReportText(
                query_pb.GetReportTextRequest(tenant=tenant, sop_instance_uid=report.SOPInstanceUID)
            )
        ).text
        assert "NUM: Length = 12.5 mm" in text and "Finding Site = Lung" in text
        await channel.close()

        deadline = time.monotonic() + 180  # generous: a loaded machine can stall a consumer group
        # polling the peer's list: there is no event to wait on
        while time.monotonic() < deadline and len(peer.received) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert len(peer.received) >= 2, "the ORU was not resent after AR"
        oru = peer.received[-1]
        assert str(oru.segment("MSH")(9)) == "ORU^R01^ORU_R01"
        assert str(oru.segment("PID")(3)).startswith("PAT-SR1")
        numeric = [s for s in oru.segments("OBX") if str(s(2)) == "NM"]
        assert len(numeric) == 1
        assert str(numeric[0](5)) == "12.5"
        assert str(numeric[0](3)).startswith("410668003^Length^SCT")
        assert str(numeric[0](6)).startswith("mm")
    finally:
        await peer.stop()
