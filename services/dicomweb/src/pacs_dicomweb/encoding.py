"""DICOM JSON responses, gzip-compressed when the client accepts it (PS3.18 8.2.3).

Only JSON is compressed: DICOM and pixel parts are already dense (or compressed), and gzip
would spend the CPU that bounds WADO-RS throughput. Streams are compressed as they go.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

DICOM_JSON = "application/dicom+json"


def wants_gzip(request: Request) -> bool:
    """Whether the client accepts a gzip content coding."""
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def _gzip() -> zlib._Compress:
    return zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: gzip wrapper


def json_response(
    request: Request,
    body: bytes,
    *,
    status: int = 200,
    min_gzip: int = 1024,
    headers: dict[str, str] | None = None,
    media_type: str = DICOM_JSON,
) -> Response:
    """A JSON answer, gzipped from ``min_gzip`` bytes on."""
    extra = dict(headers or {})
    extra["Vary"] = "Accept-Encoding"
    if wants_gzip(request) and len(body) >= min_gzip:
        compressor = _gzip()
        body = compressor.compress(body) + compressor.flush()
        extra["Content-Encoding"] = "gzip"
    return Response(body, status_code=status, media_type=media_type, headers=extra)


def json_stream(request: Request, chunks: AsyncIterator[bytes]) -> StreamingResponse:
    """A streamed JSON answer (metadata of a study), gzipped on the fly when accepted."""
    headers = {"Vary": "Accept-Encoding"}
    if not wants_gzip(request):
        return StreamingResponse(chunks, media_type=DICOM_JSON, headers=headers)

    async def compressed() -> AsyncIterator[bytes]:
        compressor = _gzip()
        async for chunk in chunks:
            out = compressor.compress(chunk)
            if out:
                yield out
        yield compressor.flush()

    headers["Content-Encoding"] = "gzip"
    return StreamingResponse(compressed(), media_type=DICOM_JSON, headers=headers)
