"""End to end: IHE IOCM rejection notes through the running stack.

Instances go in with DCMTK storescu (and STOW-RS), the rejection notes are Key Object
Selection Documents built with highdicom and sent the same ways; then DCMTK findscu (C-FIND),
getscu (C-GET), movescu (C-MOVE), and dicomweb-client (QIDO-RS, WADO-RS) must no longer see
the rejected instances, while the note itself stays findable; a KOS titled "Of Interest" hides
nothing; a note that arrives before its instances hides them too; and the deletion policy
removes the objects of a 113039 "Data Retention Policy Expired" note from storage while the
113001 ones are kept (the default).

The indexer runs on SQLite here (one stack, to spare the shared machine); the indexer's own
tests run the rejection rules on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import highdicom as hd
import pytest
import requests
import yaml
from dicomweb_client.api import DICOMwebClient
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.local import free_port, sync_channel
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import RunningStack, findscu, run_dcmtk, running_stack

pytestmark = pytest.mark.e2e

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
CALLER = "MODALITY1"  # a registered caller, which is also its own C-MOVE destination
T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The stack with a site registry (so that C-MOVE has a destination), and the rejected-
    instance sweep every half second; the deletion policy is the default one (113001, 113037,
    113038 kept; 113039 deleted at once)."""
    run_dir = tmp_path_factory.mktemp("stack-iocm")
    move_port = free_port()
    registry = run_dir / "registry.yaml"
    site = {
        # findscu (e2e_support.findscu) calls as FINDSCU, its default calling AE title.
        "callers": [
            {"ae_title": title, "networks": ["127.0.0.1/32"]} for title in (CALLER, "FINDSCU")
        ],
        "destinations": [{"ae_title": CALLER, "host": "127.0.0.1", "port": move_port}],
    }
    registry.write_text(yaml.safe_dump({"tenants": {"default": {"sites": {"main": site}}}}))
    env = {
        "PACS_GATEWAY_SITE_REGISTRY": str(registry),
        "PACS_INDEXER_REJECTED_SWEEP_INTERVAL_S": "0.5",
    }
    with running_stack(infra_env, run_dir, env) as running:
        yield running, move_port


def _series(folder: Path, study: str, count: int, series_number: int) -> list[Path]:
    """``count`` CT instances of one new series of ``study`` (pydicom's CT_small, new UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for number in range(1, count + 1):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.PatientName = "IOCM-E2E", "Iocm^E2e"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = series_number, number
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def _note(rejected: list[Path], title: Any, folder: Path) -> Path:
    """A Key Object Selection Document titled ``title`` referencing ``rejected`` (highdicom),
    in a series of its own of the same study."""
    evidence = [dcmread(p, stop_before_pixels=True) for p in rejected]
    content = hd.ko.KeyObjectSelection(document_title=title, referenced_objects=evidence)
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=evidence,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="cloudpacs tests",
    )
    path = folder / f"note-{document.SOPInstanceUID}.dcm"
    document.save_as(path, enforce_file_format=True)
    return path


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _storescu(running: RunningStack, paths: list[Path]) -> None:
    result = run_dcmtk(
        [
            "storescu",
            "-aec",
            running.ae_title,
            "-aet",
            CALLER,
            "127.0.0.1",
            str(running.dicom_port),
            *map(str, paths),
        ]
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Failed" not in output, output


def _find(running: RunningStack, folder: Path, level: str, study: str, *keys: str) -> list[Dataset]:
    out = folder / f"find-{uuid.uuid4().hex[:8]}"
    return findscu(running, out, f"QueryRetrieveLevel={level}", f"StudyInstanceUID={study}", *keys)


def _image_uids(running: RunningStack, folder: Path, study: str) -> set[str]:
    return {str(d.SOPInstanceUID) for d in _find(running, folder, "IMAGE", study, "SOPInstanceUID")}


def _until(check: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 90) -> T:
    """Poll ``check`` until ``done`` holds of its result (the last result otherwise)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _dicomweb(running: RunningStack) -> DICOMwebClient:
    return DICOMwebClient(url=f"http://127.0.0.1:{running.dicomweb_port}/dicomweb")


def _in_storage(running: RunningStack, path: Path) -> bool:
    ds = dcmread(path, stop_before_pixels=True)
    ref = instance_pb2.InstanceRef(
        tenant=running.tenant,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
    )
    with sync_channel(f"127.0.0.1:{running.storage_port}") as channel:
        storage = storage_service_pb2_grpc.StorageServiceStub(channel)
        try:
            storage.Head(storage_service_pb2.HeadRequest(instance=ref))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
    return True


def _received(folder: Path) -> set[str]:
    return {_uid(p) for p in folder.iterdir() if p.is_file()}


def test_rejection_note_hides_instances_from_find_and_every_retrieve(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    running, move_port = stack
    study = generate_uid()
    first = _series(tmp_path / "a", study, 3, 1)
    second = _series(tmp_path / "a", study, 3, 2)
    _storescu(running, first + second)
    everything = {_uid(p) for p in first + second}
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == everything)

    note = _note(first[:2], codes.DCM.RejectedForQualityReasons, tmp_path)
    _storescu(running, [note])
    kept = {_uid(p) for p in first[2:] + second} | {_uid(note)}
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == kept) == kept

    # Counts of related series and instances drop (PS3.4 C.6.2.1.2 / C.6.2.1.3).
    (found_study,) = _find(
        running, tmp_path, "STUDY", study, "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    assert (found_study.NumberOfStudyRelatedSeries, found_study.NumberOfStudyRelatedInstances) == (
        3,
        5,
    )
    series = _find(
        running, tmp_path, "SERIES", study, "SeriesNumber", "NumberOfSeriesRelatedInstances"
    )
    assert {(int(s.SeriesNumber), int(s.NumberOfSeriesRelatedInstances)) for s in series} == {
        (1, 1),
        (2, 3),
        (99, 1),
    }
    # The note itself is found at the instance level, as a KO instance.
    notes = _find(running, tmp_path, "IMAGE", study, f"SOPClassUID={KOS}", "SOPInstanceUID")
    assert [str(d.SOPInstanceUID) for d in notes] == [_uid(note)]

    # C-GET of the study sends only what is not rejected.
    got = tmp_path / "get"
    got.mkdir()
    result = run_dcmtk(
        [
            "getscu", "-S", "-aet", CALLER, "-aec", running.ae_title,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "-od", str(got), "127.0.0.1", str(running.dicom_port),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert _received(got) == kept

    # C-MOVE of the study to the caller itself (movescu listens as the destination).
    moved = tmp_path / "move"
    moved.mkdir()
    result = run_dcmtk(
        [
            "movescu", "-S", "-aet", CALLER, "-aec", running.ae_title, "-aem", CALLER,
            "--port", str(move_port), "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study}", "-od", str(moved),
            "127.0.0.1", str(running.dicom_port),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert _received(moved) == kept

    # QIDO-RS and WADO-RS: not listed, not retrievable even by its full address, no metadata.
    client = _dicomweb(running)
    listed = client.search_for_instances(study_instance_uid=study)
    assert {d["00080018"]["Value"][0] for d in listed} == kept
    rejected = dcmread(first[0], stop_before_pixels=True)
    uids = {
        "study_instance_uid": study,
        "series_instance_uid": rejected.SeriesInstanceUID,
        "sop_instance_uid": rejected.SOPInstanceUID,
    }
    for call in (client.retrieve_instance, client.retrieve_instance_metadata):
        with pytest.raises(requests.HTTPError) as refused:
            call(**uids)
        assert refused.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance_frames(**uids, frame_numbers=[1])
    assert refused.value.response.status_code == 404
    retrieved = client.retrieve_study(study)
    assert {str(d.SOPInstanceUID) for d in retrieved} == kept
    # 113001 is kept in storage by default: hidden, not deleted.
    assert all(_in_storage(running, p) for p in first[:2])


def test_a_note_stowed_before_its_instances_hides_them(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    running, _ = stack
    study = generate_uid()
    paths = _series(tmp_path / "b", study, 3, 1)
    note = _note(paths[:1], codes.DCM.RejectedForPatientSafetyReasons, tmp_path)
    _dicomweb(running).store_instances([dcmread(note)])  # STOW-RS
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == {_uid(note)}) == {
        _uid(note)
    }
    # The rejected instance is sent first: once the last one is findable, it was handled.
    _storescu(running, paths)
    kept = {_uid(p) for p in paths[1:]} | {_uid(note)}
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == kept) == kept


def test_a_kos_of_interest_hides_nothing(stack: tuple[RunningStack, int], tmp_path: Path) -> None:
    running, _ = stack
    study = generate_uid()
    paths = _series(tmp_path / "c", study, 2, 1)
    _storescu(running, paths)
    note = _note(paths, codes.DCM.OfInterest, tmp_path)  # (113000, DCM, "Of Interest")
    _storescu(running, [note])
    everything = {_uid(p) for p in paths} | {_uid(note)}
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == everything) == (
        everything
    )


def test_retention_expired_notes_delete_the_objects_by_default(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    running, _ = stack
    study = generate_uid()
    paths = _series(tmp_path / "d", study, 3, 1)
    _storescu(running, paths)
    everything = {_uid(p) for p in paths}
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: u == everything)
    quality = _note(paths[:1], codes.DCM.RejectedForQualityReasons, tmp_path)
    _storescu(running, [quality])
    assert _until(lambda: _image_uids(running, tmp_path, study), lambda u: _uid(paths[0]) not in u)
    expired = _note(paths[1:2], codes.DCM.DataRetentionPolicyExpired, tmp_path)
    _storescu(running, [expired])
    assert _until(lambda: _in_storage(running, paths[1]), lambda stored: not stored) is False
    assert _image_uids(running, tmp_path, study) == {_uid(paths[2]), _uid(quality), _uid(expired)}
    # The sweep that deleted the 113039 instance kept the 113001 one (kept forever by default),
    # and the notes themselves.
    assert _in_storage(running, paths[0])
    assert _in_storage(running, quality) and _in_storage(running, expired)
    assert _in_storage(running, paths[2])
