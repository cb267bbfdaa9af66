"""The fast path that adds Pixel Data's BulkDataURI gives what parsing the header gives."""

from __future__ import annotations

import json

from dicomweb_helpers import sample
from pacs_common.dicom import to_dicom_json
from pacs_dicomweb.metadata import _with_bulk_data_uri_parsed, with_bulk_data_uri


def test_fast_path_equals_parsing() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm"):
        dataset = sample(name)
        header = to_dicom_json(dataset)
        header.pop("7FE00010", None)  # stored headers end before the pixel data
        text = json.dumps(dict(sorted(header.items())), separators=(",", ":"))
        fast = json.loads(with_bulk_data_uri(text, "http://h/dicomweb"))
        slow = json.loads(_with_bulk_data_uri_parsed(text, "http://h/dicomweb"))
        assert fast == slow, name
        assert fast["7FE00010"]["BulkDataURI"].endswith(
            f"/instances/{dataset.SOPInstanceUID}/bulkdata/7FE00010"
        )


def test_non_images_are_unchanged() -> None:
    text = json.dumps({"00080018": {"vr": "UI", "Value": ["1.2.3"]}}, separators=(",", ":"))
    assert with_bulk_data_uri(text, "http://h") == text.encode()
