"""The container images run: storage, indexer and gateway images (``make image``) started with
podman against the local infrastructure (Kafka SASL_SSL, S3, PostgreSQL, hydra), then DCMTK's
storescu sends an instance to the gateway container and findscu finds it.

Skipped only when the images have not been built (``make image``); run with ``make image-test``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pacs_cli.stack import StackConfig
from pacs_common.local import free_port
from pacs_common.settings import KafkaSettings
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import run_dcmtk, s3_client
from tests.image.podman_support import (
    SERVICE_UID,
    Container,
    container_tls_dir,
    missing_images,
    podman,
    run_container,
    running_containers,
)

_MISSING = missing_images()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"images not built ({', '.join(_MISSING)}): run `make image` first",
    ),
]


@pytest.fixture(scope="module")
def image_stack(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[StackConfig, dict[str, Container]]]:
    """The three service containers on free ports, with a bucket, an index database (a
    scratch PostgreSQL database) and indexer consumer groups of their own."""
    work_dir = tmp_path_factory.mktemp("image-stack")
    label = uuid.uuid4().hex[:8]
    group = f"image-indexer-{label}"
    # A fresh group would replay the whole shared topic (every earlier test's events) first.
    asyncio.run(group_at_end_of_topic(group, KafkaSettings()))
    url = infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with scratch_database(url, prefix="image") as database_url:
        config = StackConfig(
            run_dir=work_dir,
            storage_port=free_port(),
            indexer_port=free_port(),
            gateway_port=free_port(),
            dicom_port=free_port(),
            env={
                "PACS_S3_BUCKET": f"image-{uuid.uuid4().hex[:16]}",
                "PACS_INDEXER_CONSUMER_GROUP": group,
                "PACS_INDEXER_WORKFLOW_CONSUMER_GROUP": f"image-workflow-{label}",
                "PACS_INDEXER_DATABASE_URL": database_url,
            },
        )
        with running_containers(config, work_dir, label) as containers:
            yield config, containers


def unique_instance(directory: Path) -> tuple[Path, str, str]:
    """CT_small with new UIDs (nothing else on the shared topic can match it); its path, Study
    and SOP Instance UIDs."""
    # pydicom's bundled file, read from its package directly (get_testdata_file may go to the
    # network for files it does not bundle, and hang here)
    ds = dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = directory / "ct.dcm"
    ds.save_as(path)
    return path, ds.StudyInstanceUID, ds.SOPInstanceUID


def find_instance(config: StackConfig, out_dir: Path, study_uid: str) -> list[str]:
    """findscu (Study Root, IMAGE level) for the study's instances; their SOP Instance UIDs."""
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    result = run_dcmtk(
        [
            "findscu",
            "-S",
            "-aec",
            "CLOUDPACS",
            "-X",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "-k",
            "SeriesInstanceUID",
            "-k",
            "SOPInstanceUID",
            "127.0.0.1",
            str(config.dicom_port),
        ],
        cwd=out_dir,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [str(dcmread(p).SOPInstanceUID) for p in sorted(out_dir.glob("rsp*.dcm"))]


def test_containers_run_as_the_image_user_on_a_read_only_root(
    image_stack: tuple[StackConfig, dict[str, Container]],
) -> None:
    """Every process in each service container is uid 10001, and its root is read-only."""
    _, containers = image_stack
    for container in containers.values():
        # huser: the uid on the host (no user namespace), user: its name in the image
        # (the gateway runs DICOM worker processes beside its main one: all of them count)
        rows = [
            line.split() for line in podman("top", container.name, "huser", "user").splitlines()[1:]
        ]
        assert rows, container.service
        assert all(row == [str(SERVICE_UID), "pacs"] for row in rows), (container.service, rows)
        read_only = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name)
        assert read_only.strip() == "true"


def test_c_store_through_the_gateway_container_is_found(
    image_stack: tuple[StackConfig, dict[str, Container]],
    infra_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """storescu → gateway container → storage container (S3, Kafka) → indexer container
    (PostgreSQL) → findscu through the gateway container finds the instance."""
    config, containers = image_stack
    path, study_uid, sop_uid = unique_instance(tmp_path)

    sent = run_dcmtk(
        ["storescu", "-aec", "CLOUDPACS", "127.0.0.1", str(config.dicom_port), str(path)]
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr + containers["gateway"].logs()

    # Stored: an object in the stack's bucket, written by the storage container.
    bucket = config.env["PACS_S3_BUCKET"]
    listed = s3_client(infra_env).list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) >= 1, listed

    # Indexed asynchronously (the indexer consumes the storage event): poll findscu.
    out_dir = tmp_path / "find"
    out_dir.mkdir()
    deadline = time.monotonic() + 180  # generous: the machine is shared
    found = find_instance(config, out_dir, study_uid)
    while not found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = find_instance(config, out_dir, study_uid)
    assert found == [sop_uid], containers["indexer"].logs()


def test_a_service_container_stops_cleanly_on_sigterm(
    infra_env: dict[str, str], tmp_path: Path
) -> None:
    """The service is PID 1 of its container (exec-form ENTRYPOINT): `podman stop` (SIGTERM,
    as the kubelet sends) ends it through its graceful shutdown, exit status 0 — not the
    SIGKILL after the grace period (137)."""
    config = StackConfig(
        run_dir=tmp_path,
        storage_port=free_port(),
        env={"PACS_S3_BUCKET": f"image-{uuid.uuid4().hex[:16]}"},
    )
    tls = container_tls_dir(tmp_path / "tls", ("storage",))
    with run_container(config, "storage", tmp_path, tls, uuid.uuid4().hex[:8]) as container:
        pid1 = podman("top", container.name, "pid", "args").splitlines()[1].split(None, 1)
        podman("stop", "--time", "60", container.name, timeout=120)
        status = podman("inspect", "--format", "{{.State.ExitCode}}", container.name).strip()
        logs = container.logs()
    assert pid1[0] == "1" and "pacs-service" in pid1[1], pid1
    assert status == "0", logs
