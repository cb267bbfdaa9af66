"""TranscodeService through a real gRPC channel (mutual TLS), next to a real storage service."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from pacs.transcode.v1 import transcode_service_pb2 as pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from pacs_testkit.hydra import Hydra
from pacs_transcoder.app import TranscoderApp
from pydicom import uid
from transcoder_pixels import dataset_of, pixels_of
from transcoder_samples import sample_bytes


async def test_transcode_uploaded_bytes_bit_exact(client: TranscodeClient) -> None:
    source = sample_bytes("gen-s16-3f")
    result, output = await client.transcode(source, uid.HTJ2KLossless)
    assert result.transfer_syntax_uid == uid.HTJ2KLossless
    assert result.source_transfer_syntax_uid == uid.ExplicitVRLittleEndian
    assert result.frames == 3 and not result.lossy and not result.new_instance
    assert result.size == len(output)
    assert dataset_of(output).file_meta.TransferSyntaxUID == uid.HTJ2KLossless
    assert np.array_equal(pixels_of(output), pixels_of(source))


async def test_already_in_the_syntax_comes_back_unchanged(client: TranscodeClient) -> None:
    source = sample_bytes("mr-12")
    result, output = await client.transcode(source, uid.ExplicitVRLittleEndian)
    assert result.unchanged
    assert output == source


async def test_stored_instance_by_reference(
    client: TranscodeClient, storage_client: StorageClient, tenant: str
) -> None:
    source = sample_bytes("ct-signed-16")
    ref = instance_ref_of(source, tenant)
    await storage_client.put(ref, source)
    result, output = await client.transcode_stored(ref, uid.JPEGLSLossless)
    assert result.transfer_syntax_uid == uid.JPEGLSLossless
    assert np.array_equal(pixels_of(output), pixels_of(source))


async def test_missing_stored_instance_is_not_found(client: TranscodeClient, tenant: str) -> None:
    ref = instance_pb2.InstanceRef(
        tenant=tenant, study_instance_uid="1.2.3", series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.4.5",
    )  # fmt: skip
    with pytest.raises(NotFoundError):
        await client.transcode_stored(ref, uid.RLELossless)


async def test_bad_input_is_invalid_argument(client: TranscodeClient) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.transcode(b"\x00" * 4096, uid.RLELossless)
    with pytest.raises(InvalidArgumentError):
        await client.transcode(sample_bytes("mr-12"), "1.2.3.4")  # not a transfer syntax


async def test_lossy_needs_allow_lossy(client: TranscodeClient) -> None:
    with pytest.raises(FailedPreconditionError):
        await client.transcode(sample_bytes("mr-12"), uid.HTJ2K)
    result, output = await client.transcode(sample_bytes("mr-12"), uid.HTJ2K, allow_lossy=True)
    assert result.lossy and result.new_instance
    assert dataset_of(output).SOPInstanceUID == result.sop_instance_uid


async def test_service_still_answers_after_bad_input(client: TranscodeClient) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.transcode(b"DICM" * 100, uid.RLELossless)
    result, _ = await client.transcode(sample_bytes("mono-8"), uid.RLELossless)
    assert result.transfer_syntax_uid == uid.RLELossless


async def test_peers_outside_the_allowed_set_are_refused(
    transcoder: TranscoderApp,
    channel_as: Callable[[TranscoderApp, str], grpc.aio.Channel],
) -> None:
    indexer = TranscodeClient(channel_as(transcoder, "indexer"), timeout=30)
    ref = instance_pb2.InstanceRef(
        tenant="t", study_instance_uid="1.2", series_instance_uid="1.2.3", sop_instance_uid="1.4"
    )
    # A unary-request call: a refused stream upload may lose its status in transport (grpc).
    with pytest.raises(PermissionDeniedError):
        await indexer.transcode_stored(ref, uid.RLELossless)


async def test_cli_needs_a_token_and_reads_only_its_tenant(
    transcoder: TranscoderApp,
    channel_as: Callable[[TranscoderApp, str], grpc.aio.Channel],
    storage_client: StorageClient,
    hydra: Hydra,
    tenant: str,
) -> None:
    cli = TranscodeClient(channel_as(transcoder, "cli"), timeout=30)
    source = sample_bytes("mono-8")
    ref = instance_ref_of(source, tenant)
    await storage_client.put(ref, source)
    with pytest.raises(PermissionDeniedError):  # no token: UNAUTHENTICATED
        await cli.transcode_stored(ref, uid.RLELossless)
    request = pb.TranscodeStoredRequest(
        instance=ref, options=pb.TranscodeOptions(transfer_syntax_uid=uid.RLELossless)
    )

    async def first_message(tenant_of_token: str) -> pb.TranscodeStoredResponse:
        metadata = hydra.metadata(tenant_of_token, ["retrieve"])
        async for message in cli.stub.TranscodeStored(request, metadata=metadata):
            return message
        raise AssertionError("no answer")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await first_message("other-tenant")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answer = await first_message(tenant)
    assert answer.result.transfer_syntax_uid == uid.RLELossless
