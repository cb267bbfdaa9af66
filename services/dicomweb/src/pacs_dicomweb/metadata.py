"""WADO-RS metadata (PS3.18 10.4.1.1.2): DICOM JSON of every instance of a study, series or
one instance, **from the index** (the headers the indexer kept from ``InstanceStored``), never
from storage: a 500-instance series costs one streamed indexer call, not 500 object reads.

The index keeps headers without bulk data; each image's Pixel Data is announced with a
``BulkDataURI`` (PS3.18 F.2.6) pointing at this service's bulk data resource.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pacs_dicomweb.backend import Backend
from pacs_dicomweb.retrieve import Address

PIXEL_DATA = "7FE00010"


def _first(dataset: dict[str, Any], tag: str) -> str:
    values = dataset.get(tag, {}).get("Value") or [""]
    return str(values[0])


def with_bulk_data_uri(text: str, base_url: str) -> bytes:
    """A stored header with the Pixel Data bulk data URI added (images only)."""
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
