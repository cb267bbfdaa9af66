"""Sample images for the transcoder's tests: pydicom's and pydicom-data's files of every
photometric/bit-depth kind, plus generated multi-frame images (signed/unsigned 8/12/16-bit,
odd sizes, RGB)."""

from __future__ import annotations

import io
from pathlib import Path

import data_store  # the pydicom-data package installs under this name
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


PYDICOM_DATA = Path(data_store.__file__).parent / "data"

REAL_SAMPLES = {
    # name: (file, what it is)
    "ct-signed-16": PYDICOM_DATA / "693_UNCI.dcm",
    "mr-12": PYDICOM_DATA / "MR2_UNCR.dcm",
    "cr-mono1-15": PYDICOM_DATA / "RG3_UNCR.dcm",
    "us-rgb-8": PYDICOM_DATA / "US1_UNCR.dcm",
    "mr-multiframe-12": PYDICOM_DATA / "emri_small.dcm",
    "signed-12": PYDICOM_DATA / "mlut_18.dcm",
    "mono-8": PYDICOM_DATA / "vlut_04.dcm",
    "palette-8-2frame": PYDICOM_DATA / "OBXXXX1A_2frame.dcm",
    "rgb-16-2frame": PYDICOM_DATA / "SC_rgb_16bit_2frame.dcm",
    "rgb-odd": PYDICOM_FILES / "SC_rgb_small_odd.dcm",
    "ybr-full-422-native": PYDICOM_FILES / "SC_ybr_full_422_uncompressed.dcm",
    "big-endian-rgb": PYDICOM_DATA / "SC_rgb_expb_2frame.dcm",
    "ct-small-signed": PYDICOM_FILES / "CT_small.dcm",
    "mr-big-endian": PYDICOM_FILES / "MR_small_bigendian.dcm",
}


def generated(
    rows: int,
    columns: int,
    frames: int,
    bits_stored: int,
    signed: bool,
    samples: int = 1,
    seed: int = 7,
) -> bytes:
    """A Part 10 Secondary Capture with smooth-plus-noise pixels using every stored bit."""
    rng = np.random.default_rng(seed)
    allocated = 8 if bits_stored <= 8 else 16
    shape = (frames, rows, columns, samples) if samples > 1 else (frames, rows, columns)
    y = np.linspace(0, 1, rows)[:, None]
    x = np.linspace(0, 1, columns)[None, :]
    ramp = (x + y) / 2
    if samples > 1:
        ramp = ramp[..., None]
    span = (1 << bits_stored) - 1
    values = ramp * span * 0.9 + rng.integers(0, max(2, span // 20), size=shape)
    values = np.clip(values, 0, span).astype(np.int64)
    if signed:
        values -= 1 << (bits_stored - 1)
    dtype = f"{'i' if signed else 'u'}{allocated // 8}"
    pixels = values.astype(dtype)

    ds = Dataset()
    # Multi-frame Secondary Capture: true colour, grayscale byte, grayscale word (PS3.4 B.5).
    multiframe = "1.2.840.10008.5.1.4.1.1.7." + (
        "4" if samples > 1 else "2" if allocated == 8 else "3"
    )
    ds.SOPClassUID = multiframe if frames > 1 else SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Test^Transcoder"
    ds.PatientID = "TC1"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples > 1 else "MONOCHROME2"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


GENERATED = {
    "gen-u8-odd-3f": dict(rows=37, columns=41, frames=3, bits_stored=8, signed=False),
    "gen-s8-2f": dict(rows=32, columns=30, frames=2, bits_stored=8, signed=True),
    "gen-u12-4f": dict(rows=64, columns=80, frames=4, bits_stored=12, signed=False),
    "gen-s12-odd-3f": dict(rows=33, columns=45, frames=3, bits_stored=12, signed=True),
    "gen-u16-2f": dict(rows=48, columns=50, frames=2, bits_stored=16, signed=False),
    "gen-s16-3f": dict(rows=40, columns=36, frames=3, bits_stored=16, signed=True),
    "gen-rgb8-odd-2f": dict(rows=31, columns=29, frames=2, bits_stored=8, signed=False, samples=3),
}


def sample_bytes(name: str) -> bytes:
    """The Part 10 bytes of a named sample (real or generated)."""
    if name in REAL_SAMPLES:
        return REAL_SAMPLES[name].read_bytes()
    return generated(**GENERATED[name])  # type: ignore[arg-type]


ALL_SAMPLES = [*REAL_SAMPLES, *GENERATED]
