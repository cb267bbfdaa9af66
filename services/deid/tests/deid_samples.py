"""Paths of the sample files pydicom and pydicom-data ship (read from their package folders:
pydicom's get_testdata_files would try the network)."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
from pydicom import dcmread
from pydicom.errors import InvalidDicomError


def pydicom_files() -> list[Path]:
    base = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(p for p in base.rglob("*") if p.is_file() and _is_part10(p))


def pydicom_data_files() -> list[Path]:
    import data_store  # noqa: PLC0415 - pydicom-data's package, only when asked

    base = Path(data_store.__file__).parent / "data"
    return sorted(p for p in base.rglob("*") if p.is_file() and _is_part10(p))


def _is_part10(path: Path) -> bool:
    if path.suffix.lower() in (".py", ".pyc", ".json", ".txt", ".gz", ".bz2", ".zip", ".xml"):
        return False
    try:
        with path.open("rb") as f:
            f.seek(128)
            if f.read(4) != b"DICM":
                return False
        dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return False
    return True
