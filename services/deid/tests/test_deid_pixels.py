"""Burned-in text: generated images with text drawn into the pixels (Pillow) are cleaned by the
OCR path, configured regions are masked per device, compressed pixel data comes back
uncompressed, overlays are cleaned under Clean Graphics, and BurnedInAnnotation is honoured."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from cryptography.fernet import Fernet
from pacs_common.errors import FailedPreconditionError
from pacs_common.settings import KafkaSettings
from pacs_deid.deidentify import Deidentification
from pacs_deid.ocr import TextDetector, to_display
from pacs_deid.options import parse_options
from pacs_deid.pixels import PixelCleaner
from pacs_deid.settings import DeidSettings, RegionMask
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pack_bits, unpack_bits
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
KEY = "pixel-project-key-0123456789"


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector(0.5)


def service(
    detector: TextDetector | None, masks: list[RegionMask] | None = None
) -> Deidentification:
    settings = DeidSettings(
        projects={"p": {"source_tenants": ["a"], "target_tenant": "r", "key": KEY}},
        reid_key=Fernet.generate_key().decode(),
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),  # not used: no events here
    )
    return Deidentification(settings, None, PixelCleaner(masks or [], detector, 2))


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def image_with_text(lines: list[tuple[int, int, str]], size: int = 256) -> np.ndarray:
    """A 12-bit CT-like slice (a disc on noise) with text burned in at full intensity."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2) * 900
    base = (rng.normal(100, 20, (size, size)) + disc).clip(0, 4095)
    text = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(text)
    for x, y, words in lines:
        draw.text((x, y), words, fill=255, font=font(16))
    mask = np.array(text) > 0
    return np.where(mask, 4095, base).astype(np.uint16)


def dataset(pixels: np.ndarray, **attributes: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^John"
    ds.PatientID = "MRN4242"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_ocr_masks_burned_in_text(detector: TextDetector) -> None:
    pixels = image_with_text([(10, 10, "DOE^JOHN 1974-03-02"), (120, 228, "MRN 4242")])
    assert len(detector.detect(to_display(pixels))) == 2  # the image really shows text
    result = service(detector).deidentify(
        "p", parse_options(["clean_pixel_data"]), dataset(pixels, BurnedInAnnotation="YES")
    )
    ocr = [m for m in result.masked if m.reason == "ocr"]
    assert len(ocr) == 2
    cleaned = dcmread(io.BytesIO(result.data)).pixel_array
    assert not detector.detect(to_display(cleaned))  # nothing readable left
    top = next(m for m in ocr if m.y < 50)
    assert (cleaned[top.y : top.y + top.height, top.x : top.x + top.width] == pixels.min()).all()
    assert (cleaned[100:150, 100:150] == pixels[100:150, 100:150]).all()  # anatomy untouched
    assert dcmread(io.BytesIO(result.data)).BurnedInAnnotation == "NO"
    assert "113101" in result.method_codes


def test_configured_regions_per_device() -> None:
    pixels = image_with_text([])
    masks = [
        RegionMask(manufacturer="acme", modality="OT", regions=[(0, 0, 256, 20)]),
        RegionMask(manufacturer="other", regions=[(0, 200, 256, 56)]),
    ]
    result = service(None, masks).deidentify(
        "p", parse_options(["clean_pixel_data"]), dataset(pixels, Manufacturer="ACME Medical")
    )
    cleaned = dcmread(io.BytesIO(result.data)).pixel_array
    assert (cleaned[:20] == pixels.min()).all()
    assert (cleaned[200:] == pixels[200:]).all()
    assert [(m.x, m.y, m.width, m.height, m.reason) for m in result.masked] == [
        (0, 0, 256, 20, "config")
    ]


def test_burned_in_annotation_refused_without_clean_pixel_data() -> None:
    with pytest.raises(FailedPreconditionError):
        service(None).deidentify(
            "p", frozenset(), dataset(image_with_text([]), BurnedInAnnotation="YES")
        )


@pytest.mark.parametrize(
    "name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_compressed_pixels_come_back_uncompressed(name: str, detector: TextDetector) -> None:
    original = (TEST_FILES / name).read_bytes()
    result = service(detector).deidentify("p", parse_options(["clean_pixel_data"]), original)
    out = dcmread(io.BytesIO(result.data))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert any("decompressed" in n for n in result.notes)
    reference = dcmread(TEST_FILES / name).pixel_array
    if not result.masked:  # a lossless decode, untouched where nothing was found
        assert np.array_equal(out.pixel_array, reference)


def test_overlay_text_cleared_under_clean_graphics(detector: TextDetector) -> None:
    text = Image.new("1", (256, 256), 0)
    ImageDraw.Draw(text).text((20, 20), "JOHN DOE 12345", fill=1, font=font(20))
    plane = np.array(text, dtype=np.uint8)
    data = dataset(image_with_text([]))
    ds = dcmread(io.BytesIO(data))
    ds.add_new(0x60000010, "US", 256)
    ds.add_new(0x60000011, "US", 256)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", pack_bits(plane.ravel()))
    buffer = io.BytesIO()
    ds.save_as(buffer)
    result = service(detector).deidentify("p", parse_options(["clean_graphics"]), buffer.getvalue())
    out = dcmread(io.BytesIO(result.data))
    bits = np.asarray(unpack_bits(out[0x60003000].value))[: 256 * 256].reshape(256, 256)
    assert plane.sum() > 0 and bits.sum() == 0
    basic = service(detector).deidentify("p", frozenset(), buffer.getvalue())
    assert 0x60003000 not in dcmread(io.BytesIO(basic.data))
