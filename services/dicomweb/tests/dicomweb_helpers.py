"""Helpers of the DICOMweb tests: sample files, synthetic series, waiting for the index."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def sample(name: str) -> Dataset:
    """A pydicom sample file, read whole."""
    return pydicom.dcmread(PYDICOM_FILES / name)


def part10(dataset: Dataset) -> bytes:
    """A dataset as Part 10 bytes."""
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series_from(
    name: str,
    count: int,
    *,
    patient: str = "DOE^JOHN",
    patient_id: str = "PID1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "",
    accession: str = "",
) -> list[bytes]:
    """``count`` instances of one new series made from a sample file (new UIDs)."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    result = []
    for number in range(1, count + 1):
        dataset = sample(name)
        dataset.PatientName = patient
        dataset.PatientID = patient_id
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        dataset.StudyDescription = description
        dataset.AccessionNumber = accession
        result.append(part10(dataset))
    return result


async def eventually(
    check: Callable[[], Awaitable[bool]], within_s: float = 60, interval: float = 0.25
) -> bool:
    """Poll ``check`` until it returns True or ``within_s`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()
