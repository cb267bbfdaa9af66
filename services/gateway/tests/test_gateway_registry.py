"""The site registry: validation, admission decisions and reloading (no services needed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from gateway_helpers import eventually, run_dcmtk, scu_associate, write_registry
from pacs_gateway.admission import (
    REASON_CALLED_AE_NOT_RECOGNIZED,
    REASON_CALLING_AE_NOT_RECOGNIZED,
    AssociationRequest,
    Caller,
    Rejection,
)
from pacs_gateway.registry import RegistryPolicy, RegistryWatcher, load_registry

REGISTRY = """
tenants:
  hospital-a:
    sites:
      main-campus:
        callers:
          - ae_title: CT01
            networks: [10.1.0.0/16, 127.0.0.1/32]
          - ae_title: MR01
            networks: [10.1.2.0/24]
            tls_subject: "CN=mr01.hospital-a.example,O=Hospital A"
        destinations:
          - ae_title: WS01
            host: 10.1.5.5
            port: 104
  clinic-b:
    sites:
      downtown:
        callers:
          - ae_title: CT01
            networks: [10.2.0.0/16]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    return path


def _request(
    ae: str, address: str, subject: str | None = None, tls: bool = False
) -> AssociationRequest:
    return AssociationRequest(ae, "CLOUDPACS", address, subject, tls or subject is not None)


def test_same_ae_title_in_two_tenants_is_told_apart_by_network(tmp_path: Path) -> None:
    policy = RegistryPolicy(load_registry(_write(tmp_path, REGISTRY)), "CLOUDPACS")

    a = policy.admit(_request("CT01", "10.1.7.7"))
    b = policy.admit(_request("CT01", "10.2.7.7"))

    assert a == Caller("hospital-a", "CT01", "10.1.7.7", "main-campus")
    assert b == Caller("clinic-b", "CT01", "10.2.7.7", "downtown")


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (_request("CT99", "10.1.7.7"), REASON_CALLING_AE_NOT_RECOGNIZED),  # unknown AE
        (_request("CT01", "192.168.1.1"), REASON_CALLING_AE_NOT_RECOGNIZED),  # wrong network
        (_request("MR01", "10.1.2.3"), REASON_CALLING_AE_NOT_RECOGNIZED),  # no TLS
        (
            _request("MR01", "10.1.2.3", "CN=someone-else,O=Hospital A"),
            REASON_CALLING_AE_NOT_RECOGNIZED,
        ),
    ],
)
def test_unknown_or_mismatched_callers_are_rejected(
    tmp_path: Path, request_: AssociationRequest, reason: int
) -> None:
    policy = RegistryPolicy(load_registry(_write(tmp_path, REGISTRY)), "CLOUDPACS")
    decision = policy.admit(request_)
    assert isinstance(decision, Rejection)
    assert decision.reason == reason


def test_tls_subject_matches_whatever_the_rdn_order(tmp_path: Path) -> None:
    policy = RegistryPolicy(load_registry(_write(tmp_path, REGISTRY)), "CLOUDPACS")
    decision = policy.admit(_request("MR01", "10.1.2.3", "O=Hospital A,CN=mr01.hospital-a.example"))
    assert isinstance(decision, Caller)
    assert decision.tenant == "hospital-a"


def test_wrong_called_ae_title_is_rejected(tmp_path: Path) -> None:
    policy = RegistryPolicy(load_registry(_write(tmp_path, REGISTRY)), "CLOUDPACS")
    decision = policy.admit(AssociationRequest("CT01", "OTHER", "10.1.1.1"))
    assert isinstance(decision, Rejection)
    assert decision.reason == REASON_CALLED_AE_NOT_RECOGNIZED


def test_destinations_are_per_tenant(tmp_path: Path) -> None:
    registry = load_registry(_write(tmp_path, REGISTRY))
    destination = registry.destination("hospital-a", "WS01")
    assert destination is not None
    assert (destination.host, destination.port) == ("10.1.5.5", 104)
    assert registry.destination("clinic-b", "WS01") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tenants: {a: {sites: {s: {callers: [{ae_title: X, networks: [10.0.0.0/8]}]}}},"
            " b: {sites: {t: {callers: [{ae_title: X, networks: [10.1.0.0/16]}]}}}}",
            "overlapping",
        ),
        ("tenants: {a: {sites: {s: {callers: [{ae_title: X, networks: []}]}}}}", "networks"),
        ("tenants: {a: {sites: {s: {callers: [{ae_title: X, networks: [nope]}]}}}}", "networks"),
        ("tenants: {a: {sites: {s: {callers: [{ae_title: '', networks: [10.0.0.0/8]}]}}}}", "AE"),
        ("tenants: {a: {sites: {s: {unknown_key: 1}}}}", "unknown_key"),
        ("tenants: [unclosed", "YAML"),
    ],
)
def test_invalid_registry_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_registry(_write(tmp_path, text))


def _caller(ae_title: str, network: str, subject: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"ae_title": ae_title, "networks": [network]}
    if subject is not None:
        entry["tls_subject"] = subject
    return entry


@pytest.mark.parametrize("name", ["Hospital-A", "hospital_a", "a/b", "-a", "x" * 64, "clinique-é"])
def test_tenant_names_storage_would_refuse_are_refused(tmp_path: Path, name: str) -> None:
    path = write_registry(
        tmp_path / "registry.yaml", {name: {"callers": [_caller("CT01", "10.1.0.0/16")]}}
    )
    with pytest.raises(ValueError, match=f"tenant '{name}': tenant must be 1-63 characters"):
        load_registry(path)


@pytest.mark.parametrize(
    ("subject_a", "subject_b", "message"),
    [
        (None, None, "must each name a tls_subject, which a/main CT01 and b/main CT02 does not"),
        ("CN=ct01,O=A", None, "must each name a tls_subject, which b/main CT02 does not"),
        (None, "CN=ct02,O=B", "must each name a tls_subject, which a/main CT01 does not"),
        ("CN=ct,O=Shared", "O=Shared,CN=ct", "name the same tls_subject"),
    ],
)
def test_tenants_sharing_a_network_must_name_distinct_tls_subjects(
    tmp_path: Path, subject_a: str | None, subject_b: str | None, message: str
) -> None:
    path = write_registry(
        tmp_path / "registry.yaml",
        {
            "a": {"callers": [_caller("CT01", "10.0.0.0/8", subject_a)]},
            "b": {"callers": [_caller("CT02", "10.7.0.0/16", subject_b)]},  # inside 10.0.0.0/8
        },
    )
    with pytest.raises(ValueError, match="tenants a and b share a network") as refused:
        load_registry(path)
    assert message in str(refused.value)


def test_tenants_sharing_a_network_are_told_apart_by_certificate(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "registry.yaml",
        {
            "a": {"callers": [_caller("CT01", "10.0.0.0/8", "CN=ct01,O=A")]},
            "b": {"callers": [_caller("CT02", "10.7.0.0/16", "CN=ct02,O=B")]},
            "c": {"callers": [_caller("CT03", "192.168.0.0/16")]},  # a network of its own
        },
    )
    policy = RegistryPolicy(load_registry(path), "CLOUDPACS")
    admitted = policy.admit(_request("CT02", "10.7.1.1", "CN=ct02,O=B"))
    assert isinstance(admitted, Caller)
    assert admitted.tenant == "b"
    assert isinstance(policy.admit(_request("CT02", "10.7.1.1", "CN=ct01,O=A")), Rejection)
    assert isinstance(policy.admit(_request("CT02", "10.7.1.1")), Rejection)


def test_watcher_reloads_on_change_and_keeps_last_good(tmp_path: Path) -> None:
    path = _write(tmp_path, REGISTRY)
    watcher = RegistryWatcher(path, poll_s=60, called_ae_title="CLOUDPACS")
    assert isinstance(watcher.policy.admit(_request("US01", "10.1.1.1")), Rejection)

    path.write_text(REGISTRY.replace("ae_title: MR01", "ae_title: US01"))
    os.utime(path, ns=(1, 1))  # a different mtime even within the same clock tick
    assert watcher.check()
    assert isinstance(
        watcher.policy.admit(_request("US01", "10.1.2.1", "CN=x", tls=True)), Rejection
    )
    assert isinstance(
        watcher.policy.admit(
            _request("US01", "10.1.2.1", "CN=mr01.hospital-a.example,O=Hospital A")
        ),
        Caller,
    )

    path.write_text("tenants: [broken")
    os.utime(path, ns=(2, 2))
    assert not watcher.check()  # invalid: the previous registry stays in force
    assert isinstance(watcher.policy.admit(_request("CT01", "10.1.1.1")), Caller)


async def test_registered_caller_echoes_and_reload_admits_new_ones(
    start_gateway, tmp_path: Path
) -> None:
    path = _write(tmp_path, REGISTRY)
    app = await start_gateway(site_registry=path, registry_poll_s=0.1)

    code, out = await run_dcmtk(
        "echoscu", "-aet", "CT01", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port)
    )
    assert code == 0, out
    rejected = await asyncio.to_thread(scu_associate, app.dicom_port, "NEWCT")
    assert rejected.is_rejected
    assert rejected.acceptor.primitive.diagnostic == REASON_CALLING_AE_NOT_RECOGNIZED

    path.write_text(
        REGISTRY.replace(
            "ae_title: CT01\n            networks: [10.1.0.0/16, 127.0.0.1/32]",
            "ae_title: NEWCT\n            networks: [127.0.0.0/8]",
        )
    )
    os.utime(path, ns=(5, 5))

    async def admitted() -> bool:
        assoc = await asyncio.to_thread(scu_associate, app.dicom_port, "NEWCT")
        if assoc.is_established:
            await asyncio.to_thread(assoc.release)
            return True
        return False

    assert await eventually(admitted, within_s=10)
    code, out = await run_dcmtk(
        "echoscu", "-aet", "CT01", "-aec", "CLOUDPACS", "127.0.0.1", str(app.dicom_port)
    )
    assert code != 0  # CT01 no longer comes from loopback
