"""Prefetch end to end, the path a hospital takes: an ORM^O01 sent over MLLP to the real hl7
service becomes OrderPlaced on Kafka; the router asks Orthanc (the remote archive holding the
patient's prior study) with C-FIND and C-MOVE; Orthanc sends the prior to cloudpacs' real
gateway with C-STORE; storage announces it and the indexer makes it findable."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs_common.auth import AuthSettings
from pacs_common.clients.query import QueryClient
from pacs_common.events import TOPIC_WORKFLOW
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.settings import KafkaSettings
from pacs_gateway.app import create_app as create_gateway
from pacs_gateway.settings import GatewaySettings
from pacs_hl7.app import create_app as create_hl7
from pacs_hl7.settings import Hl7Settings
from pacs_storage.app import StorageApp
from pacs_testkit.indexer import start_indexer
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.orthanc import OrthancDicomweb
from router_peers import RouterFactory, dataset_of, eventually, free_port, sample

ROUTER_AE = "ROUTER"
GATEWAY_AE = "CLOUDPACS"


def _orm(patient_id: str, accession: str) -> str:
    """A minimal ORM^O01 new order (HL7 v2.3.1, IHE RAD-4) for one patient."""
    segments = [
        f"MSH|^~\\&|RIS|HOSP|PACS|HOSP|20261130120000||ORM^O01|{uuid.uuid4().hex[:20]}|P|2.3.1",
        f"PID|1||{patient_id}^^^HOSP||DOE^JANE||19700101|F",
        "PV1|1|O",
        f"ORC|NW|PO{accession}|FO{accession}||SC",
        f"OBR|1|PO{accession}|FO{accession}|CTCHEST^CT Chest^LOCAL|||||||||||||||{accession}"
        f"|RP{accession}|SPS{accession}|AA2|||CT",
    ]
    return "\r".join(segments) + "\r"


async def _mllp_send(port: int, message: str) -> str:
    """One message framed per MLLP (HL7 v2 Appendix C: VT ... FS CR); the ACK."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x0b" + message.encode() + b"\x1c\r")
    await writer.drain()
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 60)
    writer.close()
    await writer.wait_closed()
    return ack.decode(errors="replace")


@pytest.fixture
def gateway_port() -> int:
    """The gateway's DICOM port, chosen first: Orthanc's configuration names it."""
    return free_port()


@pytest.fixture
def archive(gateway_port: int) -> Iterator[OrthancDicomweb]:
    """Orthanc as the remote archive: it answers the router's C-FIND/C-MOVE and knows
    cloudpacs' gateway as a C-MOVE destination."""
    modalities = {
        "router": [ROUTER_AE, "127.0.0.1", 104],
        "cloudpacs": [GATEWAY_AE, "127.0.0.1", gateway_port],
    }
    with OrthancDicomweb(extra_config={"DicomModalities": modalities}) as peer:
        yield peer


@pytest.fixture
async def cloudpacs(
    storage: StorageApp, gateway_port: int, tenant: str, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """The indexer, gateway and hl7 services (in-process) beside the test's storage."""
    indexer = await start_indexer(
        storage.grpc_port,
        tmp_path / "index.sqlite",
        shutdown_grace_s=1,
        auth=AuthSettings(trusted_services={"gateway", "cli"}),
    )
    gateway = create_gateway(
        GatewaySettings(
            dicom_port=gateway_port,
            grpc_port=0,
            ae_title=GATEWAY_AE,
            default_tenant=tenant,
            storage_target=f"127.0.0.1:{storage.grpc_port}",
            indexer_target=f"127.0.0.1:{indexer.grpc_port}",
            shutdown_grace_s=1,
            workers=1,
        )
    )
    await gateway.start()
    hl7 = create_hl7(
        Hl7Settings(grpc_port=0, mllp_port=0, shutdown_grace_s=1, default_tenant=tenant)
    )
    await hl7.start()
    yield {"indexer": indexer, "gateway": gateway, "hl7": hl7}
    await hl7.stop()
    await gateway.stop()
    await indexer.stop()


async def test_an_order_brings_the_patients_prior_study_from_the_archive(
    start_router: RouterFactory,
    archive: OrthancDicomweb,
    cloudpacs: dict[str, Any],
    tenant: str,
) -> None:
    patient_id = f"PAT-{uuid.uuid4().hex[:8]}"
    prior = sample(PatientID=patient_id, StudyDate="20200101")
    other_patient = sample(PatientID=f"OTHER-{uuid.uuid4().hex[:8]}")
    archive.upload(prior)
    archive.upload(other_patient)
    prior_uid = dataset_of(prior).StudyInstanceUID

    group = f"test-router-prefetch-{uuid.uuid4().hex[:8]}"
    await group_at_end_of_topic(group, KafkaSettings(), TOPIC_WORKFLOW)
    router = await start_router(
        {
            "prefetch": {
                tenant: {
                    "archive": {
                        "host": "127.0.0.1",
                        "port": archive.dicom_port,
                        "ae_title": "ORTHANC",
                    },
                    "move_destination": GATEWAY_AE,
                }
            }
        },
        ae_title=ROUTER_AE,
        prefetch_group=group,
    )

    ack = await _mllp_send(cloudpacs["hl7"].mllp_port, _orm(patient_id, uuid.uuid4().hex[:8]))
    assert "MSA|AA" in ack, ack

    channel = open_channel(f"127.0.0.1:{cloudpacs['indexer'].grpc_port}", client_tls("cli"))
    query = QueryClient(channel, timeout=30)

    async def findable() -> list[dict[str, Any]] | None:
        found = await query.find_studies(
            query_pb.Query(tenant=tenant, match={"PatientID": patient_id})
        )
        return [json.loads(d) for d in found.datasets] or None

    try:
        studies = await eventually(findable, within=180, what="the prior in cloudpacs' index")
        # Only the ordered patient's priors: the other patient's study stayed at the archive.
        other_uid = dataset_of(other_patient).StudyInstanceUID
        other = await query.find_studies(
            query_pb.Query(tenant=tenant, match={"StudyInstanceUID": other_uid})
        )
    finally:
        await channel.close()
    assert [s["0020000D"]["Value"][0] for s in studies] == [prior_uid]
    assert not other.datasets
    assert router.prefetcher is not None
    assert router.prefetcher.moved == 1
