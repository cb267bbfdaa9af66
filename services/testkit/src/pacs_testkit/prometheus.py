"""Debian's real ``prometheus`` for the dashboard tests, and the dashboards' panel queries as
Grafana would send them.

:func:`running_prometheus` scrapes a set of ``/metrics`` ports every second with the labels the
chart's ServiceMonitor adds; :func:`dashboard_queries` reads every panel target of the given
Grafana dashboards with Grafana's variables filled in; :func:`queries_without_data` asks
Prometheus each of them until all draw something or a deadline passes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pacs_common.local import REPO, free_port

DASHBOARD_DIR = REPO / "charts" / "cloudpacs" / "dashboards"
ROUTER_BOARD = DASHBOARD_DIR / "router.json"
"""Its panels need remote facilities (a destination that accepts, one that refuses, one that is
down, an archive to prefetch from): scraped by ``services/router/tests/test_router_dashboard.py``,
every other board by ``tests/integration/test_prometheus_scrape.py``."""
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


def prometheus_config(metrics_ports: dict[str, int]) -> dict[str, Any]:
    """One static target per component with the labels the chart's ServiceMonitor adds."""
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


@contextmanager
def running_prometheus(metrics_ports: dict[str, int], folder: Path) -> Iterator[Prometheus]:
    """Debian's ``prometheus`` on a free loopback port, scraping ``metrics_ports`` (component
    name to port), with its configuration and data in ``folder``; stopped on exit."""
    binary = shutil.which("prometheus", path="/usr/bin:/usr/local/bin")
    if binary is None:
        pytest.fail("prometheus not installed: run infra/bootstrap.sh (apt prometheus)")
    config = folder / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(json.dumps(prometheus_config(metrics_ports), indent=2))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  (the installed prometheus)
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


def dashboard_queries(boards: list[Path]) -> list[PanelQuery]:
    """Every target of every panel of the dashboard files ``boards``."""
    queries = []
    for path in boards:
        dashboard = json.loads(path.read_text())
        values = dashboard_variables(dashboard)
        for panel in panels_of(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    expr = substitute(target["expr"], values)
                    instant = bool(target.get("instant")) and not target.get("range")
                    queries.append(PanelQuery(path.name, panel["title"], expr, instant))
    return queries


def panel_values(prometheus: Prometheus, query: PanelQuery, since: float) -> list[float]:
    """What the panel would draw: the value now (a stat), or every point since ``since``."""
    return prometheus.values(query.expr, None if query.instant else since)


def is_number(value: float) -> bool:
    """A point a panel draws (a quantile of no observations, or 0/0, is NaN: nothing)."""
    return not math.isnan(value)


def queries_without_data(
    prometheus: Prometheus,
    queries: list[PanelQuery],
    since: float,
    timeout_s: float,
    shows: Callable[[float], bool] = is_number,
) -> list[PanelQuery]:
    """Ask every query until each has a point that ``shows`` accepts, or ``timeout_s`` passed;
    the queries still without one (empty when all draw data)."""
    deadline = time.monotonic() + timeout_s
    while True:
        failing = [
            q for q in queries if not any(shows(v) for v in panel_values(prometheus, q, since))
        ]
        if not failing or time.monotonic() > deadline:
            return failing
        time.sleep(SCRAPE_INTERVAL_S)


def report(failing: list[PanelQuery], total: int, what: str = "return no data") -> str:
    """The failure message: every failing query with its board and panel."""
    lines = "\n".join(f"  {q.board} / {q.title}:\n    {q.expr}" for q in failing)
    return f"{len(failing)} of {total} dashboard queries {what}:\n{lines}"
