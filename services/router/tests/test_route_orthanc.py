"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as a second facility: it receives one
destination's instances over C-STORE and another's over DICOMweb STOW-RS, and the router's
Status RPC reports what was sent, as an admin sees it through a bearer token."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from pacs.router.v1 import router_service_pb2 as pb
from pacs.router.v1 import router_service_pb2_grpc as pb_grpc
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_testkit.hydra import Hydra
from pacs_testkit.orthanc import OrthancDicomweb
from router_peers import RouterFactory, data_set_bytes, dataset_of, eventually, sample

CT_ONLY = {"modality": ["CT"]}


@pytest.fixture
def orthanc() -> Iterator[OrthancDicomweb]:
    """A fresh Orthanc with its DICOMweb plugin on free ports."""
    with OrthancDicomweb() as peer:
        yield peer


def _lookup(orthanc: OrthancDicomweb, sop_instance_uid: str) -> bytes | None:
    """The instance's file as Orthanc stored it, or None while it has not arrived."""
    request = urllib.request.Request(
        orthanc.url + "/tools/lookup", data=sop_instance_uid.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        found: list[dict[str, Any]] = json.loads(reply.read())
    for item in found:
        if item.get("Type") == "Instance":
            with urllib.request.urlopen(f"{orthanc.url}/instances/{item['ID']}/file") as reply:
                return bytes(reply.read())
    return None


async def test_orthanc_receives_over_c_store_and_stow_rs(
    start_router: RouterFactory,
    storage_client: StorageClient,
    orthanc: OrthancDicomweb,
    channel_to: Callable[..., grpc.aio.Channel],
    hydra: Hydra,
    tenant: str,
) -> None:
    app = await start_router(
        {
            "destinations": {
                "orthanc-dimse": {
                    "kind": "dimse",
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "ae_title": "ORTHANC",
                },
                "orthanc-web": {"kind": "stow", "url": orthanc.dicomweb_url},
            },
            "tenants": {
                tenant: [
                    {
                        "name": "ct",
                        "destinations": ["orthanc-dimse"],
                        "match": {"modality": ["CT"]},
                    },
                    {"name": "mr", "destinations": ["orthanc-web"], "match": {"modality": ["MR"]}},
                ]
            },
        }
    )
    ct, mr = sample(), sample("MR_small.dcm")
    for part10 in (ct, mr):
        await storage_client.put(instance_ref_of(part10, tenant), part10)
    for part10 in (ct, mr):
        uid = dataset_of(part10).SOPInstanceUID

        async def arrived(uid: str = uid) -> bytes | None:
            return _lookup(orthanc, uid)

        got = await eventually(arrived, what="the instance in Orthanc")
        assert data_set_bytes(got) == data_set_bytes(part10)

    token = hydra.token(tenant, ["admin"])
    stub = pb_grpc.RouterServiceStub(channel_to(app))
    status = await stub.Status(
        pb.StatusRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=60
    )
    by_name = {d.name: d for d in status.destinations}
    assert set(by_name) == {"orthanc-dimse", "orthanc-web"}
    assert by_name["orthanc-dimse"].kind == "dimse"
    assert by_name["orthanc-web"].address == orthanc.dicomweb_url
    for destination in by_name.values():
        assert destination.sent == 1
        assert destination.failed == 0
        assert destination.last_success_time
        assert destination.queued == 0

    other = hydra.token("another-tenant", ["admin"])
    status = await stub.Status(
        pb.StatusRequest(), metadata=[("authorization", f"Bearer {other}")], timeout=60
    )
    assert not status.destinations  # another tenant's rules send nowhere
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Status(
            pb.StatusRequest(),
            metadata=[("authorization", f"Bearer {hydra.token(tenant, ['query'])}")],
            timeout=60,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
