"""List pages through a tenant, study or series; Delete removes and announces."""

from __future__ import annotations

import grpc
import pytest
from pacs.events.v1 import instance_events_pb2
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import PacsError
from storage_testkit import InstanceEvents, address_of, for_tenant, modified_part10, sample_part10


def instance(tenant: str, study: str, series: str, sop: str) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


async def store_tree(client: StorageClient, tenant: str) -> list[instance_pb2.InstanceRef]:
    """Two studies: 1.1 with series 1.1.1 (3 instances) and 1.1.2 (2); 1.2 with one."""
    refs = [instance(tenant, "1.1", "1.1.1", f"1.1.1.{n}") for n in range(1, 4)] + [
        instance(tenant, "1.1", "1.1.2", f"1.1.2.{n}") for n in range(1, 3)
    ]
    refs.append(instance(tenant, "1.2", "1.2.1", "1.2.1.1"))
    data = sample_part10()
    for number, ref in enumerate(refs):
        await client.put(ref, data + bytes([number]))
    return refs


async def test_list_pages_through_a_tenant(client: StorageClient, tenant: str) -> None:
    refs = await store_tree(client, tenant)
    # A second version must not appear as an extra instance.
    await client.put(refs[0], sample_part10() + b"v2")

    pages = []
    token = ""
    while True:
        page = await client.list(tenant, page_size=2, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    listed = [info for page in pages for info in page.objects]

    assert len(pages) >= 3
    assert all(len(page.objects) <= 2 for page in pages)
    assert sorted(info.instance.sop_instance_uid for info in listed) == sorted(
        ref.sop_instance_uid for ref in refs
    )
    by_sop = {info.instance.sop_instance_uid: info for info in listed}
    assert by_sop["1.1.2.1"].instance == address_of(refs[3])
    assert by_sop["1.1.2.1"].size == len(sample_part10()) + 1
    assert by_sop["1.1.2.1"].key == f"{tenant}/1.1/1.1.2/1.1.2.1.dcm"


async def test_list_by_study_and_by_series(client: StorageClient, tenant: str) -> None:
    await store_tree(client, tenant)

    study = [info async for info in client.list_all(tenant, "1.1")]
    series = [info async for info in client.list_all(tenant, "1.1", "1.1.2")]
    other_tenant = await client.list(tenant + "x")

    assert sorted(i.instance.sop_instance_uid for i in study) == [
        "1.1.1.1",
        "1.1.1.2",
        "1.1.1.3",
        "1.1.2.1",
        "1.1.2.2",
    ]
    assert sorted(i.instance.sop_instance_uid for i in series) == ["1.1.2.1", "1.1.2.2"]
    assert list(other_tenant.objects) == []


async def test_delete_current_version_keeps_earlier_versions(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    first = await client.put(ref, original)
    await client.put(ref, modified_part10(original))

    removed = await client.delete(address_of(ref))
    deleted = await events.next(for_tenant(tenant, "pacs.events.v1.InstanceDeleted"))

    assert removed == 1
    with pytest.raises(PacsError) as raised:
        await client.head(address_of(ref))
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert await client.get(address_of(ref), version_id=first.object.version_id) == original
    assert isinstance(deleted.message, instance_events_pb2.InstanceDeleted)
    assert deleted.record.key == ref.study_instance_uid.encode()
    assert deleted.message.instance == address_of(ref)
    assert not deleted.message.all_versions
    assert deleted.message.deleted_time.endswith("Z")


async def test_delete_all_versions_removes_everything(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    first = await client.put(ref, original)
    await client.put(ref, modified_part10(original))

    removed = await client.delete(address_of(ref), all_versions=True)
    deleted = await events.next(for_tenant(tenant, "pacs.events.v1.InstanceDeleted"))
    again = await client.delete(address_of(ref), all_versions=True)

    assert removed == 2
    assert again == 0  # nothing left, but a retried Delete still announces
    for version_id in ("", first.object.version_id):
        with pytest.raises(PacsError) as raised:
            await client.get(address_of(ref), version_id=version_id)
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(deleted.message, instance_events_pb2.InstanceDeleted)
    assert deleted.message.all_versions
    assert [info async for info in client.list_all(tenant)] == []
