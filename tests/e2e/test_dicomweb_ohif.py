"""OHIF v3, with its stock DICOMweb configuration, against cloudpacs' DICOMweb service in a
real headless browser: the study list shows studies stored through DIMSE (storescu) and
through STOW-RS (dicomweb-client), and opening the CT series renders an image.

The viewer is served from another origin than the DICOMweb service, so every request also
goes through the browser's CORS preflight (Accept and Authorization allowed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import RunningStack, run_dcmtk, running_stack
from tests.e2e.ohif_support import chromium, ohif_server

pytestmark = pytest.mark.e2e

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def viewer_port() -> int:
    from pacs_common.local import free_port  # noqa: PLC0415

    return free_port()


def _ct_series(directory: Path, count: int) -> tuple[str, list[Path]]:
    """A CT series of ``count`` slices (CT_small with positions 5 mm apart)."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        dataset = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        dataset.PatientName, dataset.PatientID = "OHIF^DIMSE", "OHIFDIMSE"
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        position = [float(v) for v in dataset.ImagePositionPatient]
        dataset.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * number]
        dataset.SliceLocation = position[2] + 5.0 * number
        dataset.StudyDescription = "DIMSE CT"
        path = directory / f"ct{number}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


@pytest.fixture(scope="module")
def stack_with_studies(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, viewer_port: int
) -> Iterator[tuple[RunningStack, str, str]]:
    origin = f"http://127.0.0.1:{viewer_port}"
    with running_stack(
        infra_env,
        tmp_path_factory.mktemp("stack"),
        env={"PACS_DICOMWEB_CORS_ORIGINS": f'["{origin}"]'},
    ) as stack:
        files = tmp_path_factory.mktemp("ct")
        ct_study, paths = _ct_series(files, 8)
        result = run_dcmtk(
            ["storescu", "-aec", stack.ae_title, "127.0.0.1", str(stack.dicom_port)]
            + [str(p) for p in paths]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        client = DICOMwebClient(url=f"http://127.0.0.1:{stack.dicomweb_port}/dicomweb")
        mr = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
        mr.PatientName, mr.PatientID = "OHIF^STOW", "OHIFSTOW"
        mr.StudyInstanceUID, mr.SeriesInstanceUID = generate_uid(), generate_uid()
        mr.SOPInstanceUID = generate_uid()
        mr.file_meta.MediaStorageSOPInstanceUID = mr.SOPInstanceUID
        mr.StudyDescription = "STOW MR"
        client.store_instances([mr])
        # Wait until both studies are indexed (the list is what OHIF shows).
        import time  # noqa: PLC0415

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            found = client.search_for_studies(search_filters={"PatientName": "OHIF*"})
            if len(found) == 2 and any(s.get("00201208", {}).get("Value") == [8] for s in found):
                break
            time.sleep(0.5)
        yield stack, ct_study, mr.StudyInstanceUID


def test_ohif_lists_studies_stored_through_dimse_and_stow(
    stack_with_studies: tuple[RunningStack, str, str], viewer_port: int
) -> None:
    stack, _, _ = stack_with_studies
    root = f"http://127.0.0.1:{stack.dicomweb_port}/dicomweb"
    with ohif_server(root, port=viewer_port) as viewer:
        dom = chromium(f"{viewer}/?patientName=OHIF")
    assert "OHIF^DIMSE" in dom or "OHIF, DIMSE" in dom or "DIMSE CT" in dom, dom[-3000:]
    assert "DIMSE CT" in dom and "STOW MR" in dom


def test_ohif_renders_the_ct_series(
    stack_with_studies: tuple[RunningStack, str, str], viewer_port: int, tmp_path: Path
) -> None:
    stack, ct_study, _ = stack_with_studies
    root = f"http://127.0.0.1:{stack.dicomweb_port}/dicomweb"
    shot = tmp_path / "viewer.png"
    with ohif_server(root, port=viewer_port) as viewer:
        chromium(f"{viewer}/viewer?StudyInstanceUIDs={ct_study}", screenshot=shot)
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    height, width = image.shape
    # The viewport fills the middle of the window (right of the study panel, below the
    # toolbar): the CT must show there as a textured image, not a blank canvas.
    region = image[int(height * 0.3) : int(height * 0.7), int(width * 0.4) : int(width * 0.7)]
    assert region.std() > 20, f"blank viewport (std {region.std():.1f}); screenshot {shot}"
    assert (region > 60).mean() > 0.1
    Image.open(shot).save(io.BytesIO(), format="PNG")
