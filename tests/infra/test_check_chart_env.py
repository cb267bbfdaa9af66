"""infra/check_chart_env.py, on hand-made renders: what it accepts and what it refuses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "check_chart_env.py"


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_chart_env", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(tmp_path: Path, data: dict[str, str], env: list[dict[str, Any]]) -> Path:
    """A render with the storage component: its ConfigMap and Deployment."""
    docs = [
        {"kind": "ConfigMap", "metadata": {"name": "pacs-storage-config"}, "data": data},
        {
            "kind": "Deployment",
            "metadata": {"labels": {"app.kubernetes.io/component": "storage"}},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "envFrom": [{"configMapRef": {"name": "pacs-storage-config"}}],
                                "env": env,
                            }
                        ]
                    }
                }
            },
        },
    ]
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


KAFKA = {
    "PACS_KAFKA_BOOTSTRAP": "kafka:9093",
    "PACS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PACS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PACS_KAFKA_SASL_USERNAME": "pacs",
    "PACS_KAFKA_SSL_CA_FILE": "/etc/cloudpacs/kafka-ca/ca.crt",
}
PASSWORD = [{"name": "PACS_KAFKA_SASL_PASSWORD", "valueFrom": {"secretKeyRef": {"key": "p"}}}]


def test_settings_the_service_reads_pass(checker: ModuleType, tmp_path: Path) -> None:
    data = {"PACS_STORAGE_GRPC_PORT": "50051", "PACS_S3_BUCKET": "b", **KAFKA}
    assert checker.check([render(tmp_path, data, PASSWORD)]) == []


def test_a_variable_no_service_reads_is_an_error(checker: ModuleType, tmp_path: Path) -> None:
    data = {"PACS_STORAGE_GRPC_PORT": "50051", "PACS_KAFKA_SASL_MECHANISMS": "PLAIN", **KAFKA}
    problems = checker.check([render(tmp_path, data, PASSWORD)])
    assert problems == [
        "render.yaml storage: PACS_KAFKA_SASL_MECHANISMS is not a setting StorageSettings reads"
    ]


def test_a_value_the_service_rejects_is_an_error(checker: ModuleType, tmp_path: Path) -> None:
    problems = checker.check([render(tmp_path, KAFKA, env=[])])  # SASL without the password
    assert len(problems) == 1
    assert "rejected by StorageSettings" in problems[0]
    assert "PACS_KAFKA_SASL_PASSWORD" in problems[0]


def test_nested_settings_and_aliases_are_introspected(checker: ModuleType) -> None:
    from pacs_storage.settings import StorageSettings  # noqa: PLC0415

    names = checker.env_names(StorageSettings)
    assert {"PACS_STORAGE_GRPC_PORT", "PACS_KAFKA_SASL_PASSWORD", "PACS_S3_BUCKET"} <= names
    assert "PACS_TLS_DIR" in names and "PACS_KAFKA_TLS_DIR" not in names
