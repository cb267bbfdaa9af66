"""Shutdown budget and per-pod limits, read from the render: Kubernetes must not SIGKILL a pod
before the service's one stop deadline has passed, and the numbers come from one value.

Kubernetes counts ``terminationGracePeriodSeconds`` from the start of termination: the preStop
sleep runs first, SIGTERM follows, and the service then stops every part (gRPC drain, consumers,
DICOM associations, Storage Commitment, the gateway's workers) within one deadline,
``PACS_<NAME>_SHUTDOWN_GRACE_S`` (``pacs_common.settings.ServiceSettings.shutdown_grace_s``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chart_support import (
    CHART,
    CI_NAMES,
    RenderRefusedError,
    by_component,
    ci_values_file,
    components,
    render,
    values_of,
)

EXIT_S = 10
"""What a process may take after its deadline to exit (closing channels, the last log lines);
the gateway's stop waits up to 10 s more for its gRPC side and its clients (pacs_gateway.app)."""


def _budget(deployment: dict[str, Any], config: dict[str, str], name: str) -> tuple[int, float]:
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    pre_stop = (container.get("lifecycle") or {}).get("preStop", {}).get("sleep", {})
    deadline = float(config[f"PACS_{name.upper().replace('-', '_')}_SHUTDOWN_GRACE_S"])
    return spec["terminationGracePeriodSeconds"], pre_stop.get("seconds", 0) + deadline + EXIT_S


@pytest.mark.parametrize("name", CI_NAMES)
def test_the_grace_period_covers_the_shutdown_budget(name: str) -> None:
    docs = render([ci_values_file(name)])
    configs = by_component(docs, "ConfigMap")
    short = []
    for component, deployment in by_component(docs, "Deployment").items():
        grace, budget = _budget(deployment, configs[component]["data"], component)
        if grace < budget:
            short.append(f"{component}: {grace}s < preStop + deadline + {EXIT_S}s = {budget:g}s")
    assert not short, f"ci/{name}: SIGKILL before the stop deadline: " + "; ".join(short)


def test_the_grace_period_follows_the_one_deadline() -> None:
    """One value moves the deadline the service reads and the pod's grace period together."""
    docs = render(
        [ci_values_file("minimal")],
        "--set",
        "components.gateway.shutdownGraceSeconds=200,components.gateway.preStopSleepSeconds=7",
    )
    deployment = by_component(docs, "Deployment")["gateway"]
    config = by_component(docs, "ConfigMap")["gateway"]["data"]
    assert config["PACS_GATEWAY_SHUTDOWN_GRACE_S"] == "200"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 217


def test_the_grace_period_is_not_a_value_of_its_own() -> None:
    with pytest.raises(RenderRefusedError) as refused:
        render(
            [ci_values_file("minimal")],
            "--set",
            "components.gateway.terminationGracePeriodSeconds=30",
        )
    assert "terminationGracePeriodSeconds" in str(refused.value)


@pytest.mark.parametrize("name", CI_NAMES)
def test_association_limits_are_rendered_per_pod(name: str) -> None:
    """maxAssociations is the pod's limit, all workers together: rendered as given (never
    divided or multiplied by the workers), and documented so."""
    values = values_of([ci_values_file(name)])
    configs = by_component(render([ci_values_file(name)]), "ConfigMap")
    for component, c in components(values).items():
        if not c["dicom"]["enabled"]:
            continue
        prefix = f"PACS_{component.upper()}_"
        data = configs[component]["data"]
        # Enforced pod-wide (the gateway's shared table), and no process capped below it.
        assert data[prefix + "POD_MAX_ASSOCIATIONS"] == str(c["dicom"]["maxAssociations"])
        assert data[prefix + "MAX_ASSOCIATIONS"] == str(c["dicom"]["maxAssociations"])
        assert data[prefix + "WORKERS"] == str(c["dicom"]["workers"])
    table = (CHART / "README.md").read_text()
    key = "`componentDefaults.dicom.maxAssociations`"
    row = next(line for line in table.splitlines() if key in line)
    assert "per pod, all `workers` together" in row


@pytest.mark.parametrize("name", CI_NAMES)
def test_workers_report_their_metrics_together(name: str) -> None:
    """Several workers in a pod: /metrics adds them up only with PROMETHEUS_MULTIPROC_DIR, a
    writable directory of the pod's own (pacs_gateway.workers)."""
    values = values_of([ci_values_file(name)])
    docs = render([ci_values_file(name)])
    configs = by_component(docs, "ConfigMap")
    for component, deployment in by_component(docs, "Deployment").items():
        c = components(values)[component]
        workers = c["dicom"]["workers"] if c["dicom"]["enabled"] else 1
        directory = configs[component]["data"].get("PROMETHEUS_MULTIPROC_DIR")
        if workers == 1:
            assert directory is None
            continue
        spec = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert directory in mounts, f"ci/{name} {component}: {directory} is not mounted"
        assert "emptyDir" in volumes[mounts[directory]]
