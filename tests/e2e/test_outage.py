"""While the S3 server or Kafka is down the gateway refuses images with "out of resources"
(PS3.4 B.2.3, 0xA700) so the sender keeps them; once it is back the same images are accepted,
and nothing that was acknowledged is lost."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import grpc
import pytest
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.local import sync_channel
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.e2e.e2e_support import RunningStack, infra_script

pytestmark = pytest.mark.e2e

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700


def fresh_ct() -> Dataset:
    """A real CT image with new UIDs, so each send is a new instance."""
    ds = dcmread(str(get_testdata_file("CT_small.dcm")))
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def c_store(stack: RunningStack, ds: Dataset) -> int:
    ae = AE(ae_title="OUTAGETEST")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.dicom_port, ae_title=stack.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        assert status, "no response to C-STORE"
        return int(status.Status)
    finally:
        assoc.release()


def stored(stack: RunningStack, ds: Dataset) -> bool:
    with sync_channel(f"127.0.0.1:{stack.storage_port}") as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        ref = instance_pb2.InstanceRef(
            tenant=stack.tenant,
            study_instance_uid=ds.StudyInstanceUID,
            series_instance_uid=ds.SeriesInstanceUID,
            sop_instance_uid=ds.SOPInstanceUID,
        )
        try:
            stub.Head(storage_service_pb2.HeadRequest(instance=ref), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True


def store_until_success(stack: RunningStack, ds: Dataset, timeout_s: float = 60) -> int:
    """A sender retries after 'out of resources'; recovery may take a few seconds."""
    deadline = time.monotonic() + timeout_s
    status = c_store(stack, ds)
    while status == OUT_OF_RESOURCES and time.monotonic() < deadline:
        time.sleep(1)
        status = c_store(stack, ds)
    return status


@pytest.fixture
def s3_stopped() -> Iterator[None]:
    infra_script("s3", "stop")
    try:
        yield
    finally:
        infra_script("s3", "start")


@pytest.fixture
def kafka_stopped() -> Iterator[None]:
    infra_script("kafka", "stop")
    try:
        yield
    finally:
        infra_script("kafka", "start")


def test_gateway_refuses_while_s3_is_down_and_accepts_after(
    e2e_stack: RunningStack, request: pytest.FixtureRequest
) -> None:
    acknowledged = fresh_ct()
    assert c_store(e2e_stack, acknowledged) == SUCCESS
    refused = fresh_ct()

    request.getfixturevalue("s3_stopped")
    assert c_store(e2e_stack, refused) == OUT_OF_RESOURCES
    infra_script("s3", "start")

    assert not stored(e2e_stack, refused)
    assert store_until_success(e2e_stack, refused) == SUCCESS
    assert stored(e2e_stack, refused)
    assert stored(e2e_stack, acknowledged)


def test_gateway_refuses_while_kafka_is_down_and_accepts_after(
    e2e_stack: RunningStack, request: pytest.FixtureRequest
) -> None:
    acknowledged = fresh_ct()
    assert c_store(e2e_stack, acknowledged) == SUCCESS
    refused = fresh_ct()

    request.getfixturevalue("kafka_stopped")
    assert c_store(e2e_stack, refused) == OUT_OF_RESOURCES
    infra_script("kafka", "start")

    assert store_until_success(e2e_stack, refused) == SUCCESS
    assert stored(e2e_stack, refused)
    assert stored(e2e_stack, acknowledged)
