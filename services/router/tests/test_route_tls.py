"""A destination that asks for TLS (PS3.15 B.1): DCMTK ``storescp +tls`` with a certificate of
a private CA. The router sends when its destination names that CA, and keeps the instance
queued, with the certificate error as its last error, while it does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.pki import ensure_ca, issue
from router_peers import RouterFactory, StoreScp, dataset_of, dimse, eventually, sample


async def test_tls_destination_receives_only_when_its_ca_is_trusted(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    tenant: str,
    tmp_path: Path,
) -> None:
    facility = tmp_path / "facility-ca"
    identity = issue(facility, "site-b", ensure_ca(facility))  # SANs include 127.0.0.1
    secure = storescp(tls=(identity.key_file, identity.cert_file)).start()
    trusted = {**dimse(secure), "tls": {"enabled": True, "ca_file": str(facility / "ca.crt")}}
    untrusted = {**dimse(secure), "tls": {"enabled": True}}  # the system CAs only
    app = await start_router(
        {
            "destinations": {"site-b": untrusted},
            "tenants": {tenant: [{"name": "all", "destinations": ["site-b"]}]},
        }
    )
    part10 = sample()
    await storage_client.put(instance_ref_of(part10, tenant), part10)
    sender = app.senders["site-b"]

    async def refused_handshake() -> bool:
        return "CERTIFICATE_VERIFY_FAILED" in sender.state.last_error

    await eventually(refused_handshake, what="the untrusted certificate refused")
    assert not secure.received()
    await app.stop()  # the instance stays queued (not committed)

    app = await start_router(
        {
            "destinations": {"site-b": trusted},
            "tenants": {tenant: [{"name": "all", "destinations": ["site-b"]}]},
        }
    )

    async def arrived() -> bool:
        return len(secure.received()) == 1

    await eventually(arrived, what="the instance over TLS")
    assert dataset_of(secure.received()[0]).SOPInstanceUID == dataset_of(part10).SOPInstanceUID
