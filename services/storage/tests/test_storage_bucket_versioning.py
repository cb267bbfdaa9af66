"""A delete of every version on a bucket with S3 versioning turned on (as docs/operations.md
advises for backups): S3 keeps the bytes of a plain DeleteObject as noncurrent versions behind
a delete marker, so storage must remove those too. The S3 server here is a versitygw of the
test's own, started with ``--versioning-dir`` (the shared one has no versioning), and the
check is S3's own ListObjectVersions."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.local import REPO
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pydantic import SecretStr
from storage_testkit import (
    InstanceEvents,
    address_of,
    for_tenant,
    modified_part10,
    sample_part10,
)

ACCESS_KEY, SECRET_KEY = "versioned", "versioned-secret-key"


@pytest.fixture(scope="module")
def versioned_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private versitygw (posix backend, versioning on) on a free port, stopped afterwards."""
    binary = REPO / ".cache" / "bin" / "versitygw"
    if not binary.exists():
        pytest.fail(f"{binary} missing: run infra/bootstrap.sh")
    root = tmp_path_factory.mktemp("versioned-s3")
    for folder in ("data", "meta", "versions"):
        (root / folder).mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(binary), "--port", f"127.0.0.1:{port}", "--quiet", "posix",
         "--sidecar", str(root / "meta"), "--versioning-dir", str(root / "versions"),
         str(root / "data")],
        env={**os.environ, "ROOT_ACCESS_KEY": ACCESS_KEY, "ROOT_SECRET_KEY": SECRET_KEY},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, "versitygw exited at start"
            assert time.monotonic() < deadline, "versitygw did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3_settings(versioned_endpoint: str, bucket_name: str) -> S3Settings:
    """The test's bucket on the versioned server, with S3 versioning enabled before storage
    starts (overrides the conftest's fixture of the same name)."""
    settings = S3Settings(
        endpoint=versioned_endpoint,
        access_key=SecretStr(ACCESS_KEY),
        secret_key=SecretStr(SECRET_KEY),
        bucket=bucket_name,
        max_attempts=2,
    )
    client = make_s3_client(settings)
    client.create_bucket(Bucket=bucket_name)
    client.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    client.close()
    return settings


def _versions(raw_s3: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    response = raw_s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return [
        (item["Key"], item["VersionId"])
        for item in response.get("Versions", []) + response.get("DeleteMarkers", [])
    ]


async def test_delete_of_every_version_leaves_no_s3_version_or_delete_marker(
    client: StorageClient,
    events: InstanceEvents,
    raw_s3: Any,
    s3_settings: S3Settings,
    tenant: str,
) -> None:
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    await client.put(ref, original)
    await client.put(ref, modified_part10(original))
    prefix = f"{tenant}/{ref.study_instance_uid}/"
    before = _versions(raw_s3, s3_settings.bucket, prefix)

    removed = await client.delete(address_of(ref), all_versions=True)
    deleted = await events.next(for_tenant(tenant, "pacs.events.v1.InstanceDeleted"))
    after = _versions(raw_s3, s3_settings.bucket, prefix)

    assert len(before) >= 3, "S3 itself versions the bucket (the current key was overwritten)"
    assert removed == 2
    assert deleted.message.all_versions
    assert after == []


async def test_delete_of_the_current_version_keeps_the_earlier_ones(
    client: StorageClient, tenant: str
) -> None:
    """Without all_versions storage's earlier version stays readable, as on any bucket."""
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    first = await client.put(ref, original)
    await client.put(ref, modified_part10(original))

    await client.delete(address_of(ref))

    assert await client.get(address_of(ref), version_id=first.object.version_id) == original
