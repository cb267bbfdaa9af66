"""The dashboards against a real Prometheus: the services run as processes with their
``/metrics`` ports, Debian's ``prometheus`` scrapes them every second, DCMTK stores, finds and
retrieves a few instances, and then every panel query of every dashboard in
``charts/cloudpacs/dashboards/`` must return data.

A query that returns nothing is a panel an operator sees as "No data": a metric no service
emits, a label the query expects and the scrape does not carry, or a ratio whose numerator has
no series yet. The failure message lists every such query at once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.local import REPO, free_port, sync_channel
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.e2e.e2e_support import RunningStack, run_dcmtk, running_stack

pytestmark = pytest.mark.integration

# The router's board needs remote facilities (a destination that accepts, one that refuses, one
# that is down for a while, an archive to prefetch from): its panels are checked against the
# metrics the code exports by `infra/dashboards/generate.sh check`, not scraped here.
NOT_SCRAPED = {"router.json"}
DASHBOARDS = sorted(
    path
    for path in (REPO / "charts" / "cloudpacs" / "dashboards").glob("*.json")
    if path.name not in NOT_SCRAPED
)
COMPONENTS = ("storage", "indexer", "gateway", "transcoder", "deid")
# The first is RLE-compressed: retrieving its study makes the gateway ask the transcoder for a
# syntax getscu accepts (the transcoder panels' traffic, besides its on-store policy).
SAMPLES = ["MR_small_RLE.dcm", "CT_small.dcm", "rtplan.dcm"]
SCRAPE_INTERVAL_S = 1
# Grafana's built-in interval variables, as Grafana would fill them for a short time range
# with a 1 s scrape interval ($__rate_interval is at least four scrape intervals).
GRAFANA_BUILTINS = {
    "__rate_interval": "15s",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass
class Prometheus:
    """A Prometheus server of the test, reached over its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def values(self, expr: str, since: float | None) -> list[float]:
        """Every sample value of ``expr``: evaluated now, or every second from ``since`` (Unix
        time) until now, as Grafana asks for a graph (a range query)."""
        if since is None:
            data = self.api("query", query=expr)
        else:
            data = self.api(
                "query_range",
                query=expr,
                start=f"{since:.3f}",
                end=f"{time.time():.3f}",
                step=f"{SCRAPE_INTERVAL_S}s",
            )
        result = data["result"]
        if data["resultType"] == "scalar":
            return [float(result[1])]
        if data["resultType"] == "vector":
            return [float(series["value"][1]) for series in result]
        return [float(value) for series in result for _, value in series["values"]]

    def log_tail(self, lines: int = 20) -> str:
        """The end of Prometheus' own log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


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


def prometheus_config(metrics_ports: dict[str, int]) -> dict[str, Any]:
    """One static target per service with the labels the chart's ServiceMonitor adds."""
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {
                "job_name": "cloudpacs",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"component": component, "pod": f"{component}-0"},
                    }
                    for component, port in metrics_ports.items()
                ],
            }
        ],
    }


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


@pytest.fixture(scope="module")
def prometheus(
    metrics_ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` on a free loopback port with its data in a temporary folder."""
    binary = shutil.which("prometheus", path="/usr/bin:/usr/local/bin")
    if binary is None:
        pytest.fail("prometheus not installed: run infra/bootstrap.sh (apt prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(json.dumps(prometheus_config(metrics_ports), indent=2))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server, timeout_s=30)
        yield server
    finally:
        stop_process(process)


def wait_ready(server: Prometheus, timeout_s: float) -> None:
    """Wait for Prometheus' readiness endpoint."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"prometheus exited:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    pytest.fail(f"prometheus not ready after {timeout_s:.0f}s:\n{server.log_tail()}")


def wait_targets_up(server: Prometheus, count: int, timeout_s: float) -> None:
    """Wait until ``count`` targets were scraped successfully."""
    deadline = time.monotonic() + timeout_s
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        targets = server.api("targets", state="active")["activeTargets"]
        if len(targets) == count and all(t["health"] == "up" for t in targets):
            return
        time.sleep(0.5)
    states = {t["scrapeUrl"]: (t["health"], t["lastError"]) for t in targets}
    pytest.fail(f"scrape targets not all up after {timeout_s:.0f}s: {states}")


def dashboard_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each template variable as "All" selects it: its ``allValue``, or ``.*``."""
    values = dict(GRAFANA_BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana's ``$name``, ``${name}`` and ``[[name]]`` with ``values``."""

    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(one, expr)


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with Grafana's variables filled in."""

    board: str
    title: str
    expr: str
    instant: bool
    """Stat panels ask for the value now; graphs ask for a range."""


def dashboard_queries() -> list[PanelQuery]:
    """Every target of every panel of every dashboard."""
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        values = dashboard_variables(dashboard)
        for panel in panels_of(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    expr = substitute(target["expr"], values)
                    instant = bool(target.get("instant")) and not target.get("range")
                    queries.append(PanelQuery(path.name, panel["title"], expr, instant))
    return queries


def shows_data(prometheus: Prometheus, query: PanelQuery, since: float) -> bool:
    """True if the panel would draw something: a sample that is a number (a quantile of no
    observations, or 0/0, is NaN: nothing to draw)."""
    values = prometheus.values(query.expr, None if query.instant else since)
    return any(not math.isnan(value) for value in values)


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
    queries = dashboard_queries()
    assert len(DASHBOARDS) >= 4 and len(queries) > 40, "dashboards missing: generate.sh"
    wait_targets_up(prometheus, len(COMPONENTS), timeout_s=20)
    since = time.time()
    send_traffic(scraped_stack, tmp_path)

    # rate() needs two scrapes after the traffic; then keep asking until every query shows
    # data or the deadline passes.
    time.sleep(2 * SCRAPE_INTERVAL_S)
    deadline = time.monotonic() + 10
    while True:
        failing = [q for q in queries if not shows_data(prometheus, q, since)]
        if not failing or time.monotonic() > deadline:
            break
        time.sleep(SCRAPE_INTERVAL_S)
    report = "\n".join(f"  {q.board} / {q.title}:\n    {q.expr}" for q in failing)
    assert not failing, (
        f"{len(failing)} of {len(queries)} dashboard queries return no data:\n{report}"
    )
