"""The router's dashboard (``charts/cloudpacs/dashboards/router.json``) against a real
Prometheus: the router runs with its ``/metrics`` port beside a real storage service (both
started by this suite's fixtures, in the test's process), Debian's ``prometheus``
scrapes it every second, and real facilities give every panel something to show:

- ``remote-pacs``, an Orthanc that accepts what is sent (sent, time per instance, since the
  last success); it is also the archive prefetch asks with C-FIND/C-MOVE (prefetched priors),
  and moves the priors to DCMTK ``storescp`` standing in for cloudpacs' gateway;
- ``jpeg-only``, an Orthanc that accepts JPEG Baseline only: it rejects every presentation
  context of an uncompressed CT, a refusal for good (refused, dead-lettered);
- ``offline``, a facility that is down: nothing listens on its port (retried, queued).

Instances arrive as they do in production: stored through the storage service, which
announces them on Kafka; orders arrive as the ``OrderPlaced`` events the hl7 service publishes.

The router creates its per-destination counters at 0, so "a number" alone would be satisfied by
a router that never sent anything: every panel query must show a number other than 0, which
only the traffic above produces. The failure message lists every query that does not. (Metrics
are process-wide: in a session that ran other routers in-process before, their series are
scraped too; they no longer move, so every rate and increase is still this test's traffic, but
their last queue depth and last success time stay, and may fill those two panels as well.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacs.events.v1 import workflow_events_pb2 as workflow_pb
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.events import TOPIC_WORKFLOW, EventPublisher
from pacs_common.local import free_port
from pacs_common.settings import KafkaSettings
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.orthanc import OrthancDicomweb
from pacs_testkit.prometheus import (
    ROUTER_BOARD,
    Prometheus,
    dashboard_queries,
    is_number,
    queries_without_data,
    report,
    running_prometheus,
    wait_targets_up,
)
from pydicom.uid import generate_uid
from router_peers import RouterFactory, StoreScp, dimse, sample

pytestmark = pytest.mark.integration

ROUTER_AE = "ROUTER"
GATEWAY_AE = "CLOUDPACS"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
DESTINATIONS = ("remote-pacs", "jpeg-only", "offline")
# Series that appear only with their first increment: rate() sees an increase only once
# Prometheus has scraped them, so the second round of traffic waits for that.
FIRST_INCREMENTS = {
    "enqueued": f'sum(pacs_route_enqueued_total{{destination=~"{"|".join(DESTINATIONS)}"}})',
    "send time": 'sum(pacs_route_send_duration_seconds_count{destination="remote-pacs"})',
    "prefetched": "sum(pacs_route_prefetched_studies_total)",
}


@pytest.fixture
def router_metrics_port() -> int:
    """The router's ``/metrics`` port."""
    return free_port()


@pytest.fixture
def prometheus(router_metrics_port: int, tmp_path: Path) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` scraping the router's ``/metrics``."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    with running_prometheus({"router": router_metrics_port}, folder) as server:
        yield server


@pytest.fixture
def gateway(storescp: Callable[..., StoreScp]) -> StoreScp:
    """Stands in for cloudpacs' gateway as the C-MOVE destination of prefetch."""
    return storescp(ae_title=GATEWAY_AE).start()


@pytest.fixture
def remote_pacs(gateway: StoreScp) -> Iterator[OrthancDicomweb]:
    """Orthanc as the other facility's PACS: a destination that accepts, and the archive that
    knows the router (C-FIND/C-MOVE) and the gateway (a move destination)."""
    modalities = {
        "router": [ROUTER_AE, "127.0.0.1", 104],
        "cloudpacs": [GATEWAY_AE, "127.0.0.1", gateway.port],
    }
    with OrthancDicomweb(extra_config={"DicomModalities": modalities}) as peer:
        yield peer


@pytest.fixture
def jpeg_only() -> Iterator[OrthancDicomweb]:
    """Orthanc accepting JPEG Baseline only: it refuses an uncompressed CT for good."""
    with OrthancDicomweb(extra_config={"AcceptedTransferSyntaxes": [JPEG_BASELINE]}) as peer:
        yield peer


def routes(
    tenant: str, remote_pacs: OrthancDicomweb, jpeg_only: OrthancDicomweb, offline: StoreScp
) -> dict[str, Any]:
    """Every instance of the tenant to the three destinations; its orders prefetch from the
    remote PACS."""
    archive = {"host": "127.0.0.1", "port": remote_pacs.dicom_port, "ae_title": "ORTHANC"}
    return {
        "destinations": {
            "remote-pacs": {"kind": "dimse", **archive},
            "jpeg-only": {
                "kind": "dimse",
                "host": "127.0.0.1",
                "port": jpeg_only.dicom_port,
                "ae_title": "ORTHANC",
            },
            "offline": dimse(offline),
        },
        "tenants": {tenant: [{"name": "all", "destinations": list(DESTINATIONS)}]},
        "prefetch": {tenant: {"archive": archive, "move_destination": GATEWAY_AE}},
    }


async def send_round(
    client: StorageClient, publisher: EventPublisher, tenant: str, patient_id: str
) -> None:
    """One CT stored (routed to every destination) and one order for the patient (its prior
    prefetched), as the gateway and the hl7 service would."""
    part10 = sample()
    await client.put(instance_ref_of(part10, tenant), part10)
    order = workflow_pb.OrderPlaced(
        origin=workflow_pb.MessageOrigin(tenant=tenant, message_type="ORM^O01"),
        patient=workflow_pb.Patient(patient_id=patient_id),
        step=workflow_pb.ScheduledStep(study_instance_uid=generate_uid(), modality="CT"),
    )
    await publisher.publish(TOPIC_WORKFLOW, f"{tenant}/{patient_id}", order)


def scraped(prometheus: Prometheus) -> dict[str, float]:
    """What Prometheus last scraped of the series that appear with their first increment."""
    return {
        name: sum(prometheus.values(expr, None), 0.0) for name, expr in FIRST_INCREMENTS.items()
    }


async def wait_scraped_above(
    prometheus: Prometheus, before: dict[str, float], timeout_s: float
) -> None:
    """Wait until Prometheus has scraped an increase of each of :data:`FIRST_INCREMENTS`."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = await asyncio.to_thread(scraped, prometheus)
        behind = [name for name, value in now.items() if value <= before[name]]
        if not behind:
            return
        assert time.monotonic() < deadline, f"the first round never reached {behind}: {now}"
        await asyncio.sleep(0.5)


def moved(value: float) -> bool:
    """A point the traffic made: a number other than 0."""
    return is_number(value) and value != 0


async def test_every_router_panel_shows_the_traffic(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    remote_pacs: OrthancDicomweb,
    jpeg_only: OrthancDicomweb,
    prometheus: Prometheus,
    router_metrics_port: int,
    tenant: str,
) -> None:
    queries = dashboard_queries([ROUTER_BOARD])
    assert len(queries) >= 10, "router.json lost its panels: infra/dashboards/generate.sh"
    patient_id = f"PAT-{uuid.uuid4().hex[:8]}"
    prior = sample(PatientID=patient_id, StudyDate="20200101")
    await asyncio.to_thread(remote_pacs.upload, prior)
    offline = storescp()  # never started: the facility is down
    # A fresh group would first read every order other tests ever published.
    prefetch_group = f"test-router-prefetch-{uuid.uuid4().hex[:8]}"
    await group_at_end_of_topic(prefetch_group, KafkaSettings(), TOPIC_WORKFLOW)
    await start_router(
        routes(tenant, remote_pacs, jpeg_only, offline),
        ae_title=ROUTER_AE,
        prefetch_group=prefetch_group,
        metrics_port=router_metrics_port,
    )
    # The counters created at 0 are scraped before anything moves them: rate() then sees the
    # first increment too.
    await asyncio.to_thread(wait_targets_up, prometheus, 1, 30)
    since = time.time()
    before = await asyncio.to_thread(scraped, prometheus)

    publisher = EventPublisher(KafkaSettings(), source="hl7")
    await publisher.start()
    try:
        # Two rounds: the second after Prometheus scraped the series the first one created
        # (a histogram's quantile needs an increase between two scrapes).
        await send_round(storage_client, publisher, tenant, patient_id)
        await wait_scraped_above(prometheus, before, timeout_s=90)
        await send_round(storage_client, publisher, tenant, patient_id)
    finally:
        await publisher.stop()

    failing = await asyncio.to_thread(queries_without_data, prometheus, queries, since, 30, moved)
    assert not failing, report(failing, len(queries), "show no data, or only 0")
