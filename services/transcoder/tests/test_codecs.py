"""The codec layer: every lossless syntax gives back exactly the source pixels; lossy output is
marked (PS3.3 C.7.6.1.1.5); the offset tables and photometric rules are the standard's."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
from pacs_transcoder import part10
from pacs_transcoder.errors import LossyRefusedError, NotEncodableError, UnsupportedImageError
from pacs_transcoder.syntaxes import SYNTAXES
from pacs_transcoder.transcode import transcode
from pydicom import uid
from transcoder_pixels import dataset_of, pixels_of
from transcoder_samples import ALL_SAMPLES, generated, sample_bytes

LOSSLESS = [s for s, syntax in SYNTAXES.items() if not syntax.lossy]
# JPEG lossless carries at most 16 bits, JPEG-LS/J2K/HTJ2K too; the 32-bit samples are not here.


def _run(source: bytes, target: str, **kwargs: object) -> tuple[bytes, object]:
    out = io.BytesIO()
    result = transcode(io.BytesIO(source), out, target, **kwargs)  # type: ignore[arg-type]
    return out.getvalue(), result


@pytest.mark.parametrize("target", LOSSLESS, ids=lambda t: SYNTAXES[t].name[:30])
@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_lossless_round_trip_is_bit_exact(sample: str, target: str) -> None:
    source = sample_bytes(sample)
    output, _ = _run(source, target)
    written = dataset_of(output)
    assert written.file_meta.TransferSyntaxUID == target
    assert written.SOPInstanceUID == dataset_of(source).SOPInstanceUID  # same instance
    assert np.array_equal(pixels_of(output), pixels_of(source))


@pytest.mark.parametrize(
    "target", [uid.JPEGBaseline8Bit, uid.JPEG2000, uid.HTJ2K, uid.JPEGLSNearLossless]
)
def test_lossy_output_is_marked_and_a_new_instance(target: str) -> None:
    source = sample_bytes("us-rgb-8") if target == uid.JPEGBaseline8Bit else sample_bytes("mr-12")
    output, _ = _run(source, target, allow_lossy=True)
    before, after = dataset_of(source), dataset_of(output)
    assert after.LossyImageCompression == "01"
    methods = after.LossyImageCompressionMethod
    ratios = after.LossyImageCompressionRatio
    assert (methods if isinstance(methods, str) else methods[-1]) == SYNTAXES[target].method
    assert float(ratios if not isinstance(ratios, list | tuple) else ratios[-1]) > 1
    assert after.SOPInstanceUID != before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    difference = np.abs(pixels_of(output).astype(np.int64) - pixels_of(source).astype(np.int64))
    # Lossy, but an image of the same thing (JPEG-LS NEAR=2 bounds every sample's error).
    bound = 2 if target == uid.JPEGLSNearLossless else (1 << int(before.BitsStored)) // 8
    assert difference.mean() < bound


def test_jpeg_baseline_colour_is_ybr_full_422() -> None:
    output, _ = _run(sample_bytes("us-rgb-8"), uid.JPEGBaseline8Bit, allow_lossy=True)
    assert dataset_of(output).PhotometricInterpretation == "YBR_FULL_422"  # PS3.5 8.2.1


@pytest.mark.parametrize(
    ("target", "photometric"),
    [
        (uid.JPEG2000Lossless, "YBR_RCT"),
        (uid.HTJ2KLossless, "YBR_RCT"),
        (uid.JPEG2000, "YBR_ICT"),
        (uid.HTJ2K, "YBR_ICT"),
        (uid.JPEGLSLossless, "RGB"),
        (uid.RLELossless, "RGB"),
    ],
)
def test_colour_photometric_interpretation_per_syntax(target: str, photometric: str) -> None:
    output, _ = _run(sample_bytes("us-rgb-8"), target, allow_lossy=True)
    written = dataset_of(output)
    assert written.PhotometricInterpretation == photometric  # PS3.5 8.2.4, 8.2.14
    assert written.PlanarConfiguration == 0


def test_decoding_mct_colour_gives_rgb() -> None:
    compressed, _ = _run(sample_bytes("us-rgb-8"), uid.HTJ2KLossless)
    output, _ = _run(compressed, uid.ExplicitVRLittleEndian)
    assert dataset_of(output).PhotometricInterpretation == "RGB"
    assert np.array_equal(pixels_of(output), pixels_of(sample_bytes("us-rgb-8")))


def test_lossy_target_refused_unless_allowed() -> None:
    with pytest.raises(LossyRefusedError):
        _run(sample_bytes("mr-12"), uid.JPEG2000)


@pytest.mark.parametrize(
    ("sample", "target"),
    [
        ("palette-8-2frame", uid.JPEGBaseline8Bit),  # palette is never made lossy
        ("mr-12", uid.JPEGBaseline8Bit),  # 12 bits do not fit JPEG Baseline
        ("ct-signed-16", uid.JPEGExtended12Bit),  # signed lossy JPEG refused
    ],
)
def test_unrepresentable_output_is_refused(sample: str, target: str) -> None:
    with pytest.raises(NotEncodableError):
        _run(sample_bytes(sample), target, allow_lossy=True)


def test_not_dicom_is_invalid_argument() -> None:
    with pytest.raises(UnsupportedImageError):
        _run(b"not a DICOM file" * 20, uid.RLELossless)


def _pixel_data_items(part10_bytes: bytes) -> list[bytes]:
    """The items of the encapsulated Pixel Data, basic offset table first."""
    start = part10_bytes.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    items = []
    position = start
    while part10_bytes[position : position + 4] == b"\xfe\xff\x00\xe0":
        (length,) = struct.unpack("<I", part10_bytes[position + 4 : position + 8])
        items.append(part10_bytes[position + 8 : position + 8 + length])
        position += 8 + length
    assert part10_bytes[position : position + 4] == b"\xfe\xff\xdd\xe0"
    return items


def test_multiframe_has_one_fragment_per_frame_and_a_basic_offset_table() -> None:
    output, _ = _run(sample_bytes("gen-u12-4f"), uid.JPEGLSLossless)
    items = _pixel_data_items(output)
    offsets = list(struct.unpack(f"<{len(items[0]) // 4}I", items[0]))
    assert len(items) == 1 + 4
    expected, position = [], 0
    for fragment in items[1:]:
        expected.append(position)
        position += 8 + len(fragment)
        assert len(fragment) % 2 == 0  # PS3.5 A.4: items of even length
    assert offsets == expected


def test_extended_offset_table_when_offsets_pass_32_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Objects of 4 GiB are too big for a unit test: lower the threshold to prove the layout.
    monkeypatch.setattr(part10.FrameSpool, "needs_extended_offsets", property(lambda s: True))
    source = sample_bytes("gen-s16-3f")
    output, _ = _run(source, uid.HTJ2KLossless)
    written = dataset_of(output)
    offsets = struct.unpack("<3Q", written.ExtendedOffsetTable)
    lengths = struct.unpack("<3Q", written.ExtendedOffsetTableLengths)
    items = _pixel_data_items(output)
    assert items[0] == b""  # PS3.5 A.4: the basic offset table is empty beside an EOT
    # Each length is the fragment's, before its padding byte (PS3.5 A.4.2).
    assert all(length in (len(f), len(f) - 1) for length, f in zip(lengths, items[1:], strict=True))
    assert offsets[0] == 0 and offsets[1] == 8 + len(items[1])
    assert np.array_equal(pixels_of(output), pixels_of(source))


def _cod_progression(codestream: bytes) -> int:
    position = codestream.index(b"\xff\x52")  # COD marker
    return codestream[position + 5]  # Lcod(2) Scod(1) then SGcod: progression order first


def test_htj2k_rpcl_has_rpcl_progression_tlm_and_small_lowest_resolution() -> None:
    output, _ = _run(sample_bytes("cr-mono1-15"), uid.HTJ2KLosslessRPCL)
    codestream = _pixel_data_items(output)[1]
    assert _cod_progression(codestream) == 2  # RPCL (ISO 15444-1 Table A.16)
    assert b"\xff\x55" in codestream  # TLM marker (PS3.5 8.2.14)
    position = codestream.index(b"\xff\x52")
    decompositions = codestream[position + 9]
    assert max(1760, 1760) / (1 << decompositions) <= 64


def test_big_multiframe_needs_memory_for_about_one_frame() -> None:
    frames, rows, columns = 48, 512, 512
    source = generated(rows, columns, frames, 12, signed=False)
    frame_bytes = rows * columns * 2
    source_file = io.BytesIO(source)
    tracemalloc.start()
    try:
        out = io.BytesIO()
        transcode(source_file, out, uid.HTJ2KLossless)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output_bytes = len(out.getvalue())
    # The output buffer itself is the test's; beyond it, a few frames and the in-memory spool.
    assert peak - output_bytes < 8 * frame_bytes + part10.SPOOL_IN_MEMORY
    assert peak - output_bytes < len(source) / 2
