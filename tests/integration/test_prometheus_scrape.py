"""The dashboards against a real Prometheus: the services run as processes with their
``/metrics`` ports, Debian's ``prometheus`` scrapes them every second, DCMTK stores, finds and
retrieves a few instances, and then every panel query of every dashboard in
``charts/cloudpacs/dashboards/`` must return data (the router's board, whose panels need remote
facilities, has a test of its own: ``services/router/tests/test_router_dashboard.py``).

A query that returns nothing is a panel an operator sees as "No data": a metric no service
emits, a label the query expects and the scrape does not carry, or a ratio whose numerator has
no series yet. The failure message lists every such query at once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.local import free_port, sync_channel
from pacs_testkit.prometheus import (
    DASHBOARD_DIR,
    ROUTER_BOARD,
    SCRAPE_INTERVAL_S,
    Prometheus,
    dashboard_queries,
    queries_without_data,
    report,
    running_prometheus,
    wait_targets_up,
)
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.e2e.e2e_support import RunningStack, run_dcmtk, running_stack

pytestmark = pytest.mark.integration

# The router's board is scraped by services/router/tests/test_router_dashboard.py, against
# the remote facilities its panels need; every other board here.
DASHBOARDS = sorted(path for path in DASHBOARD_DIR.glob("*.json") if path != ROUTER_BOARD)
COMPONENTS = ("storage", "indexer", "gateway", "transcoder", "deid")
# The first is RLE-compressed: retrieving its study makes the gateway ask the transcoder for a
# syntax getscu accepts (the transcoder panels' traffic, besides its on-store policy).
SAMPLES = ["MR_small_RLE.dcm", "CT_small.dcm", "rtplan.dcm"]


@pytest.fixture(scope="module")
def metrics_ports() -> dict[str, int]:
    """A free ``/metrics`` port per service."""
    return {component: free_port() for component in COMPONENTS}


@pytest.fixture(scope="module")
def scraped_stack(
    infra_env: dict[str, str],
    metrics_ports: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningStack]:
    """Storage, indexer, gateway, transcoder and deid as processes, each serving ``/metrics``
    (the transcoder applies its default on-store policy: the CT sample becomes HTJ2K)."""
    env = {
        # One receiving process: several add up only through PROMETHEUS_MULTIPROC_DIR,
        # which the stack's shared environment would hand to every service alike.
        "PACS_GATEWAY_WORKERS": "1",
        # Nothing is in flight when the test ends: no need to wait the default 10 s.
        **{f"PACS_{component.upper()}_SHUTDOWN_GRACE_S": "2" for component in COMPONENTS},
        **{
            f"PACS_{component.upper()}_METRICS_PORT": str(port)
            for component, port in metrics_ports.items()
        },
    }
    with running_stack(
        infra_env, tmp_path_factory.mktemp("stack"), env, transcoder=True, deid=True
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def prometheus(
    metrics_ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` scraping every service's ``/metrics``."""
    with running_prometheus(metrics_ports, tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def send_traffic(stack: RunningStack, tmp_path: Path) -> None:
    """What a site does: store a few images, query them, retrieve one study; plus one call
    for an instance that does not exist, so that the non-OK panels have a code to show."""
    paths = [str(get_testdata_file(name)) for name in SAMPLES]
    port = str(stack.dicom_port)
    # Two associations a few scrapes apart: a labelled series appears with its first
    # increment, and rate() only sees increments after a series' first scrape.
    # The first file goes as it is, RLE (-xr: propose RLE Lossless); the rest uncompressed.
    for options, batch in ((["-xr"], paths[:1]), ([], paths[1:])):
        stored = run_dcmtk(
            ["storescu", *options, "-aec", stack.ae_title, "127.0.0.1", port, *batch]
        )
        assert stored.returncode == 0, stored.stdout + stored.stderr
        time.sleep(2 * SCRAPE_INTERVAL_S)
    study_uid = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    find_dir = tmp_path / "find"
    find_dir.mkdir()
    deadline = time.monotonic() + 30
    while True:
        # The indexer learns of the instances through Kafka: poll until it has them.
        found = run_dcmtk(
            [
                "findscu",
                "-S",
                "-aec",
                stack.ae_title,
                "-X",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                "127.0.0.1",
                port,
            ],
            cwd=find_dir,
        )
        assert found.returncode == 0, found.stdout + found.stderr
        if list(find_dir.glob("rsp*.dcm")):
            break
        assert time.monotonic() < deadline, "the stored study never became findable"
        time.sleep(0.5)
    # Two C-GETs a scrape apart: storage's Get counters then increase between two scrapes, which
    # rate() needs (the indexer no longer reads headers back through Get: they come with the
    # event, so retrieval is the only reader).
    for round_ in range(2):
        if round_:
            time.sleep(SCRAPE_INTERVAL_S + 0.5)
        get_dir = tmp_path / f"get{round_}"
        get_dir.mkdir()
        retrieved = run_dcmtk(
            [
                "getscu",
                "-S",
                "-aec",
                stack.ae_title,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                "-od",
                str(get_dir),
                "127.0.0.1",
                port,
            ]
        )
        assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr
        assert list(get_dir.iterdir()), "C-GET retrieved nothing"
    with sync_channel(f"127.0.0.1:{stack.storage_port}") as channel:
        storage = storage_service_pb2_grpc.StorageServiceStub(channel)
        missing = instance_pb2.InstanceRef(
            tenant=stack.tenant,
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.4",
            sop_instance_uid=f"2.25.{uuid.uuid4().int}",
        )
        with pytest.raises(grpc.RpcError) as error:
            storage.Head(storage_service_pb2.HeadRequest(instance=missing), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    # Twice, a scrape apart, like the C-GETs: the histograms' rate() needs an increase.
    deidentify(stack, paths, tmp_path / "deid-0")
    time.sleep(SCRAPE_INTERVAL_S + 0.5)
    deidentify(stack, paths, tmp_path / "deid-1")


def deidentify(stack: RunningStack, paths: list[str], folder: Path) -> None:
    """One folder through ``pacs deid files`` (the de-identification panels' traffic)."""
    source, target = folder / "in", folder / "out"
    source.mkdir(parents=True)
    for path in paths:
        shutil.copy(path, source)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pacs_cli",
            "deid",
            "files",
            str(source),
            str(target),
            "--deid",
            f"127.0.0.1:{stack.deid_port}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_returns_data(
    scraped_stack: RunningStack, prometheus: Prometheus, tmp_path: Path
) -> None:
    queries = dashboard_queries(DASHBOARDS)
    assert len(DASHBOARDS) >= 4 and len(queries) > 40, "dashboards missing: generate.sh"
    wait_targets_up(prometheus, len(COMPONENTS), timeout_s=20)
    since = time.time()
    send_traffic(scraped_stack, tmp_path)

    # rate() needs two scrapes after the traffic; then keep asking until every query shows
    # data or the deadline passes.
    time.sleep(2 * SCRAPE_INTERVAL_S)
    failing = queries_without_data(prometheus, queries, since, timeout_s=10)
    assert not failing, report(failing, len(queries))
