"""WADO-RS metadata (PS3.18 10.4.1.1.2): DICOM JSON of every instance of a study, series or
one instance, **from the index** (the headers the indexer kept from ``InstanceStored``), never
from storage: a 500-instance series costs one streamed indexer call, not 500 object reads.

The index keeps headers without bulk data; each image's Pixel Data is announced with a
``BulkDataURI`` (PS3.18 F.2.6) pointing at this service's bulk data resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pacs_dicomweb.backend import Backend
from pacs_dicomweb.retrieve import Address

PIXEL_DATA = "7FE00010"


def _first(dataset: dict[str, Any], tag: str) -> str:
    values = dataset.get(tag, {}).get("Value") or [""]
    return str(values[0])


# The indexer stores headers as compact JSON (separators ",", ":"), so the few values needed
# here are found without parsing the whole header: a 500-instance series would otherwise spend
# most of its time in json.loads/json.dumps of headers passed through unchanged.
_UI = r'\{"vr":"UI","Value":\["([0-9.]+)"\]'
_STUDY = re.compile(r'"0020000D":' + _UI)
_SERIES = re.compile(r'"0020000E":' + _UI)
_SOP = re.compile(r'"00080018":' + _UI)
_BITS = re.compile(r'"00280100":\{"vr":"US","Value":\[(\d+)\]')


def with_bulk_data_uri(text: str, base_url: str) -> bytes:
    """A stored header with the Pixel Data bulk data URI added (images only)."""
    if '"00280010":' not in text or f'"{PIXEL_DATA}":' in text:
        return text.encode()
    study, series, sop = _STUDY.search(text), _SERIES.search(text), _SOP.search(text)
    stripped = text.rstrip()
    if study is None or series is None or sop is None or not stripped.endswith("}"):
        return _with_bulk_data_uri_parsed(text, base_url)  # another encoding: the slow way
    bits = _BITS.search(text)
    vr = "OW" if bits is None or int(bits.group(1)) > 8 else "OB"
    url = (
        f"{base_url}/studies/{study.group(1)}/series/{series.group(1)}"
        f"/instances/{sop.group(1)}/bulkdata/{PIXEL_DATA}"
    )
    element = json.dumps({"vr": vr, "BulkDataURI": url}, separators=(",", ":"))
    return (stripped[:-1] + f',"{PIXEL_DATA}":{element}}}').encode()


def _with_bulk_data_uri_parsed(text: str, base_url: str) -> bytes:
    dataset = json.loads(text)
    if "00280010" in dataset and PIXEL_DATA not in dataset:
        url = (
            f"{base_url}/studies/{_first(dataset, '0020000D')}/series/"
            f"{_first(dataset, '0020000E')}/instances/{_first(dataset, '00080018')}"
            f"/bulkdata/{PIXEL_DATA}"
        )
        bits = dataset.get("00280100", {}).get("Value") or [16]
        dataset[PIXEL_DATA] = {"vr": "OW" if int(bits[0]) > 8 else "OB", "BulkDataURI": url}
    return json.dumps(dataset, separators=(",", ":")).encode()


async def metadata_chunks(
    backend: Backend, address: Address, base_url: str
) -> AsyncIterator[bytes]:
    """The JSON array of the headers under ``address``, one header per chunk.

    The first header is fetched before the first byte is produced, so an unknown study or
    series still becomes a 404 (the caller awaits :func:`first_then_rest`).
    """
    if address.instance:
        text = await backend.query.instance_metadata(
            address.tenant, address.study, address.series, address.instance
        )
        yield b"[" + with_bulk_data_uri(text, base_url) + b"]"
        return
    headers = backend.query.study_metadata(address.tenant, address.study, address.series)
    separator = b"["
    async for text in headers:
        yield separator + with_bulk_data_uri(text, base_url)
        separator = b","
    yield b"]" if separator == b"," else b"[]"


async def first_then_rest(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Await the first chunk now (errors surface before the response starts), then stream."""
    first = await anext(chunks)

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return rest()
