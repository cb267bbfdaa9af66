"""The HTTP resources of PS3.18 (STOW-RS, QIDO-RS, WADO-RS) and what each one calls.

Handlers stay thin: authenticate (:mod:`pacs_dicomweb.security`), parse the path and query,
call the domain modules (:mod:`~pacs_dicomweb.qido`, :mod:`~pacs_dicomweb.metadata`,
:mod:`~pacs_dicomweb.retrieve`, :mod:`~pacs_dicomweb.stow`), shape the answer. Errors are
domain errors turned into HTTP statuses in one place (:mod:`pacs_dicomweb.http_errors`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Role
from pacs_common.dicom import is_valid_uid
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pydicom.tag import Tag
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pacs_dicomweb import capabilities, multipart, pixels
from pacs_dicomweb.backend import Backend
from pacs_dicomweb.encoding import json_response, json_stream
from pacs_dicomweb.media import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    MediaRange,
    choose,
    parse_accept,
    part_content_type,
)
from pacs_dicomweb.metadata import first_then_rest, metadata_chunks
from pacs_dicomweb.qido import QidoLevel, decorate, parse_request, search
from pacs_dicomweb.ranges import byte_range
from pacs_dicomweb.retrieve import (
    Address,
    InstanceCache,
    InstancePart,
    frames,
    indexed_ref,
    instance_refs,
    open_instance,
    prefetched,
    read_whole,
)
from pacs_dicomweb.security import Authenticator
from pacs_dicomweb.settings import DicomwebSettings
from pacs_dicomweb.stow import Stower, request_form

# What an empty Accept (or */*) means (PS3.18 8.7.3.5: the default transfer syntax).
DEFAULT_INSTANCE = MediaRange("application/dicom", None, True)
DEFAULT_PIXELS = MediaRange("application/octet-stream", None, True)


@dataclass
class Context:
    """What every handler needs: settings, the backend, the authenticator."""

    settings: DicomwebSettings
    backend: Backend
    auth: Authenticator
    cache: InstanceCache | None = None

    def base_url(self, request: Request) -> str:
        """The absolute URL of the DICOMweb root, for Retrieve URLs."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        netloc = request.url.netloc
        server = request.scope.get("server")
        if ":" not in netloc and server and server[1] not in (80, 443):
            # A Host header without the port (dicomweb-client sends one): the port we serve on.
            netloc = f"{netloc}:{server[1]}"
        return f"{request.url.scheme}://{netloc}{self.settings.base_path}"

    async def tenant(self, request: Request, role: Role) -> str:
        """The caller's tenant, after checking it has ``role``."""
        caller = await self.auth.caller(request)
        caller.require(role)
        assert caller.tenant is not None  # tokens and the loopback rule always name one
        return caller.tenant


def _uid(request: Request, name: str) -> str:
    value = str(request.path_params.get(name, ""))
    if value and not is_valid_uid(value):
        raise InvalidArgumentError(f"{name} is not a valid UID (PS3.5 9.1)")
    return value


async def _address(ctx: Context, request: Request, role: Role) -> Address:
    return Address(
        await ctx.tenant(request, role),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
    )


def routes(ctx: Context) -> list[Route]:  # noqa: PLR0915  (one closure per resource; the table stays in one place)
    """Every resource, relative to the base path."""

    async def capabilities_(request: Request) -> Response:
        body = json.dumps(capabilities.describe(ctx.base_url(request)), indent=1).encode()
        return json_response(request, body, media_type="application/json")

    def qido(level: QidoLevel) -> Route:
        async def handler(request: Request) -> Response:
            tenant = await ctx.tenant(request, Role.QUERY)
            scope = {}
            if "study" in request.path_params:
                scope["StudyInstanceUID"] = _uid(request, "study")
            if "series" in request.path_params:
                scope["SeriesInstanceUID"] = _uid(request, "series")
            parsed = parse_request(
                request.query_params.multi_items(),
                level,
                ctx.settings.qido_default_limit,
                ctx.settings.qido_max_limit,
            )
            result = await search(ctx.backend, tenant, level, parsed, scope)
            base = ctx.base_url(request)
            datasets = [decorate(d, level, base) for d in result.datasets]
            headers = {"X-Total-Count": str(result.total)}
            if result.total > parsed.offset + len(datasets):
                # PS3.18 8.3.4.4: tell the client the answer was cut (it may page on).
                headers["Warning"] = (
                    '299 cloudpacs: "There are additional results that can be requested"'
                )
            body = json.dumps(datasets, separators=(",", ":")).encode()
            return json_response(
                request, body, headers=headers, min_gzip=ctx.settings.gzip_min_bytes
            )

        return handler  # type: ignore[return-value]

    async def metadata(request: Request) -> Response:
        address = await _address(ctx, request, Role.QUERY)
        chunks = await first_then_rest(metadata_chunks(ctx.backend, address, ctx.base_url(request)))
        return json_stream(request, chunks)

    async def retrieve(request: Request) -> Response:
        address = await _address(ctx, request, Role.RETRIEVE)
        ranges = parse_accept(request.headers.get("accept"))
        limit = ctx.settings.max_decode_bytes

        def open_part(ref: instance_pb2.InstanceRef) -> Awaitable[InstancePart]:
            return open_instance(ctx.backend, ref, ranges, DEFAULT_INSTANCE, limit)

        pipeline = prefetched(
            instance_refs(ctx.backend, address),
            open_part,
            ctx.settings.retrieve_prefetch,
            ctx.settings.retrieve_buffer_bytes,
        )
        first = await anext(pipeline)  # errors (404, 406) before the response starts
        if address.instance and ranges and not ranges[0].multipart:
            # A single instance asked for as plain application/dicom (PS3.18 8.7.3.2).
            return StreamingResponse(first.chunks, media_type="application/dicom")
        boundary = multipart.new_boundary()

        async def parts() -> AsyncIterator[tuple[list[tuple[str, str]], AsyncIterator[bytes]]]:
            yield [("Content-Type", first.content_type)], first.chunks
            async for part in pipeline:
                yield [("Content-Type", part.content_type)], part.chunks

        return StreamingResponse(
            multipart.stream_parts(boundary, parts()),
            media_type=multipart.content_type(boundary, "application/dicom"),
        )

    async def frames_(request: Request) -> Response:
        address = await _address(ctx, request, Role.RETRIEVE)
        numbers = _frame_numbers(str(request.path_params["frames"]))
        ranges = parse_accept(request.headers.get("accept"))
        choice, data = await frames(
            ctx.backend,
            await indexed_ref(ctx.backend, address),
            numbers,
            ranges,
            default=DEFAULT_PIXELS,
            max_decode_bytes=ctx.settings.max_decode_bytes,
            cache=ctx.cache,
        )
        if ranges and not ranges[0].multipart and len(data) == 1:
            return Response(data[0], media_type=part_content_type(choice))
        return _multipart(data, part_content_type(choice), choice.media_type)

    async def bulkdata(request: Request) -> Response:
        address = await _address(ctx, request, Role.RETRIEVE)
        tag = _tag(str(request.path_params["tag"]))
        ranges = parse_accept(request.headers.get("accept"))
        ref = await indexed_ref(ctx.backend, address)
        stored, data = await read_whole(ctx.backend, ref, ctx.settings.max_decode_bytes)
        choice = choose(ranges, stored, instance=False, default=DEFAULT_PIXELS)
        if tag != Tag("PixelData"):
            choice = choose([], EXPLICIT_VR_LITTLE_ENDIAN, instance=False, default=DEFAULT_PIXELS)
        values = await asyncio.to_thread(_bulk_values, data, tag, choice.transcode)
        status, headers = 200, {"Accept-Ranges": "bytes"}
        if len(values) == 1:
            wanted = byte_range(request.headers.get("range"), len(values[0]))
            if wanted is not None:
                first, last = wanted
                headers["Content-Range"] = f"bytes {first}-{last}/{len(values[0])}"
                values = [values[0][first : last + 1]]
                status = 206
        if ranges and not ranges[0].multipart and len(values) == 1:
            return Response(
                values[0], status, headers=headers, media_type=part_content_type(choice)
            )
        response = _multipart(values, part_content_type(choice), choice.media_type)
        response.status_code = status
        response.headers.update(headers)
        return response

    def rendered(thumbnail: bool) -> Route:
        async def handler(request: Request) -> Response:
            address = await _address(ctx, request, Role.RETRIEVE)
            options = pixels.parse_render_options(
                request.headers.get("accept"), dict(request.query_params), thumbnail=thumbnail
            )
            number = 1
            if "frames" in request.path_params:
                number = _frame_numbers(str(request.path_params["frames"]))[0]
            ref = (
                await indexed_ref(ctx.backend, address)
                if address.instance
                else await _representative(ctx, address)
            )
            _, data = await read_whole(ctx.backend, ref, ctx.settings.max_decode_bytes, ctx.cache)

            def work() -> bytes:
                return pixels.render(pixels.read_dataset(data), number, options)

            image = await asyncio.to_thread(work)
            return Response(image, media_type=options.media_type)

        return handler  # type: ignore[return-value]

    async def stow(request: Request) -> Response:
        tenant = await ctx.tenant(request, Role.INGEST)
        study = _uid(request, "study")
        boundary, part_type = request_form(request.headers.get("content-type"))
        stower = Stower(ctx.backend, tenant, study, ctx.settings.max_instance_bytes)
        if part_type == "application/dicom":
            result = await stower.store_dicom_parts(boundary, request.stream())
        else:
            result = await stower.store_json_parts(boundary, request.stream())
        body = json.dumps(result.response(ctx.base_url(request))).encode()
        return json_response(request, body, status=result.status)

    study = "/studies/{study}"
    series = study + "/series/{series}"
    instance = series + "/instances/{instance}"
    return [
        Route("/", capabilities_),
        Route("/capabilities", capabilities_),
        Route("/studies", qido(QidoLevel.STUDY), methods=["GET"]),
        Route("/studies", stow, methods=["POST"]),
        Route("/series", qido(QidoLevel.SERIES)),
        Route("/instances", qido(QidoLevel.INSTANCE)),
        Route(study, retrieve, methods=["GET"]),
        Route(study, stow, methods=["POST"]),
        Route(study + "/metadata", metadata),
        Route(study + "/rendered", rendered(False)),
        Route(study + "/thumbnail", rendered(True)),
        Route(study + "/series", qido(QidoLevel.SERIES)),
        Route(study + "/instances", qido(QidoLevel.INSTANCE)),
        Route(series, retrieve),
        Route(series + "/metadata", metadata),
        Route(series + "/rendered", rendered(False)),
        Route(series + "/thumbnail", rendered(True)),
        Route(series + "/instances", qido(QidoLevel.INSTANCE)),
        Route(instance, retrieve),
        Route(instance + "/metadata", metadata),
        Route(instance + "/rendered", rendered(False)),
        Route(instance + "/thumbnail", rendered(True)),
        Route(instance + "/frames/{frames}", frames_),
        Route(instance + "/frames/{frames}/rendered", rendered(False)),
        Route(instance + "/frames/{frames}/thumbnail", rendered(True)),
        Route(instance + "/bulkdata/{tag}", bulkdata),
    ]


async def _representative(ctx: Context, address: Address) -> instance_pb2.InstanceRef:
    """The instance that stands for a study or series in a rendered/thumbnail answer: the
    middle one of the (first) series, where a CT shows anatomy rather than an end slice."""
    match = {"StudyInstanceUID": address.study}
    if address.series:
        match["SeriesInstanceUID"] = address.series
    else:
        refs = instance_refs(ctx.backend, address)
        first = await anext(refs)
        match["SeriesInstanceUID"] = first.series_instance_uid
    query = query_pb.Query(
        tenant=address.tenant,
        match=match,
        return_keys=["SeriesInstanceUID", "SOPInstanceUID"],
        limit=1,
    )
    page = await ctx.backend.query.find_instances(query)
    if not page.datasets:
        raise NotFoundError("no indexed instance at this address")
    query.offset = int(page.total_count // 2)
    page = await ctx.backend.query.find_instances(query)
    dataset = json.loads(page.datasets[0])
    return Address(
        address.tenant,
        address.study,
        dataset["0020000E"]["Value"][0],
        dataset["00080018"]["Value"][0],
    ).ref()


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError("frames are 1-based numbers separated by commas") from None
    if not numbers or any(n < 1 for n in numbers):
        raise InvalidArgumentError("frames are 1-based numbers separated by commas")
    return numbers


def _tag(text: str) -> int:
    try:
        if len(text) != 8:
            raise ValueError
        return int(text, 16)
    except ValueError:
        raise InvalidArgumentError("bulk data is addressed by an 8-hex-digit tag") from None


def _bulk_values(data: bytes, tag: int, decode: bool) -> list[bytes]:
    dataset = pixels.read_dataset(data)
    if tag == Tag("PixelData"):
        pixels.check_frames(dataset, [1])
        count = pixels.number_of_frames(dataset)
        if decode:
            return [b"".join(pixels.decoded_frame(dataset, n) for n in range(1, count + 1))]
        if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
            return [pixels.stored_frame(dataset, n) for n in range(1, count + 1)]
        return [bytes(dataset.PixelData)]
    element = dataset.get(tag)
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFoundError("the instance has no bulk data element with this tag")
    return [bytes(element.value)]


def _multipart(values: list[bytes], part_type: str, media_type: str) -> Response:
    boundary = multipart.new_boundary()
    body = b"".join(
        multipart.part_header(boundary, [("Content-Type", part_type)]) + value + multipart.CRLF
        for value in values
    )
    body += multipart.closing(boundary)
    return Response(body, media_type=multipart.content_type(boundary, media_type))
