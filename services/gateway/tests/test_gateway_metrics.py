"""Prometheus metrics of the DICOM side, read from the gateway's /metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request

from gateway_helpers import eventually, run_dcmtk, sample_path, scu_associate
from prometheus_client.parser import text_string_to_metric_families


async def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    text = await asyncio.to_thread(fetch)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_dimse_operations_and_rejections_are_counted(start_gateway) -> None:
    app = await start_gateway(metrics_port=0, allowed_networks=["127.0.0.1/32"])
    assert app.metrics is not None
    before = await _samples(app.metrics.port)

    code, out = await run_dcmtk("echoscu", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port))
    assert code == 0, out
    await run_dcmtk(  # storage is unreachable: refused with A700 (a failure)
        "storescu", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port),
        sample_path("CT_small.dcm"),
    )  # fmt: skip
    rejected = await asyncio.to_thread(scu_associate, app.dicom_port, "X", "NOTUS")
    assert rejected.is_rejected
    after = await _samples(app.metrics.port)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("pacs_dimse_operations_total", operation="C-ECHO", status="success") == 1
    assert delta("pacs_dimse_operations_total", operation="C-STORE", status="failure") == 1
    assert delta("pacs_dicom_associations_rejected_total", reason="unknown_called_ae") == 1

    async def open_count(expected: float) -> bool:
        samples = await _samples(app.metrics.port)
        return samples[("pacs_dicom_associations_open", ())] == expected

    held = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert held.is_established
    assert await eventually(lambda: open_count(1), within_s=10)
    await asyncio.to_thread(held.release)
    assert await eventually(lambda: open_count(0), within_s=10)
