"""No environment variable is rendered that nothing reads: the render of every ci/ values file,
read by infra/check_chart_env.py (each component's settings class, introspected and loaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.chart.chart_support import CI_NAMES, REPO, ci_values_file, render

SCRIPT = REPO / "infra" / "check_chart_env.py"


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_chart_env", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problems(
    checker: ModuleType, tmp_path: Path, values: str = "", name: str = "minimal"
) -> list[str]:
    """check_chart_env's findings on ci/NAME rendered with ``values`` (YAML) over it."""
    extra = tmp_path / "extra-values.yaml"
    extra.write_text(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(render([ci_values_file(name), extra])))
    problems: list[str] = checker.check([path])
    return problems


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_rendered_variable_is_read_and_accepted(
    checker: ModuleType, tmp_path: Path, name: str
) -> None:
    assert _problems(checker, tmp_path, name=name) == []


def test_a_setting_no_service_reads_is_found(checker: ModuleType, tmp_path: Path) -> None:
    problems = _problems(checker, tmp_path, "components: {storage: {settings: {no_such: 1}}}")
    assert problems == [
        "minimal.yaml storage: PACS_STORAGE_NO_SUCH is not a setting StorageSettings reads"
    ]


def test_an_egress_setting_no_service_reads_is_found(checker: ModuleType, tmp_path: Path) -> None:
    sink = '{host: 10.1.2.3, port: 9, settings: {sink_target: "{host}:{port}"}}'
    values = f"components: {{storage: {{egress: {{sink: {sink}}}}}}}"
    problems = _problems(checker, tmp_path, values)
    assert problems == [
        "minimal.yaml storage: PACS_STORAGE_SINK_TARGET is not a setting StorageSettings reads"
    ]


def test_a_variable_outside_pacs_that_nothing_reads_is_found(
    checker: ModuleType, tmp_path: Path
) -> None:
    env = '[{name: INDEXER_MAX_RESULTS, value: "5"}]'
    problems = _problems(checker, tmp_path, f"components: {{indexer: {{extraEnv: {env}}}}}")
    assert len(problems) == 1
    assert problems[0].startswith(
        "minimal.yaml indexer: INDEXER_MAX_RESULTS is read by nothing in the image"
    )


def test_a_component_without_a_service_is_found(checker: ModuleType, tmp_path: Path) -> None:
    problems = _problems(
        checker, tmp_path, "components: {relay: {image: {repository: cloudpacs/relay}}}"
    )
    assert problems == [
        "minimal.yaml relay: no pacs_relay.settings: "
        "nothing would read the settings the chart renders for it"
    ]
