"""The Basic Profile (and every option at once) on every sample file pydicom and pydicom-data
ship: the result is written and read back, leaves nothing the table says to remove or replace
(:mod:`pacs_deid.residuals`), and none of the original identifying values."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from deid_samples import pydicom_data_files, pydicom_files
from pacs_deid.engine import Deidentifier
from pacs_deid.options import Option
from pacs_deid.profile import Profile
from pacs_deid.pseudonyms import Pseudonymizer
from pacs_deid.residuals import violations
from pydicom import dcmread

FILES = pydicom_files() + pydicom_data_files()
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
)


def _originals(path: Path) -> list[bytes]:
    ds = dcmread(path, stop_before_pixels=True)
    values = []
    # Kept attributes (the table does not name them) may share text with an identifying one.
    kept = " ".join(str(ds.get(k, "")) for k in ("Manufacturer", "ManufacturerModelName"))
    for keyword in IDENTIFYING:
        value = str(ds.get(keyword, "") or "").strip()
        if value in kept or (value.isdigit() and len(value) < 10):
            continue  # short numbers occur by chance in pseudonym UIDs
        if len(value) >= 4 and value.upper() not in ("ANONYMOUS", "ANON", "UNKNOWN"):
            values.append(value.encode("latin-1", "replace"))
    return values


def test_there_are_samples() -> None:
    assert len(FILES) > 100


@pytest.mark.parametrize("options", [frozenset(), frozenset({Option.CLEAN_DESCRIPTORS})])
def test_samples_leave_no_violation(options: frozenset[Option]) -> None:
    profile = Profile(options)
    engine = Deidentifier(profile, Pseudonymizer(b"samples"))
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in FILES:
            ds = dcmread(path)
            engine.apply(ds)
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=False)
            written = buffer.getvalue()
            back = dcmread(io.BytesIO(written), force=True)
            problems += [f"{path.name}: {v}" for v in violations(back, profile)]
            for original in _originals(path):
                if original in written:
                    problems.append(f"{path.name}: an original identifier is still in the file")
    assert not problems, "\n".join(problems[:40])
