"""The single-object requests storage signs and sends itself (``pacs_storage.signed_http``):
against the real S3 server, and against a server that fails, for boto3's retry rules."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pacs_common.errors import UnavailableError
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pacs_storage.bucket import Bucket
from pacs_storage.signed_http import S3RefusedError, SignedS3Requests
from pacs_storage.versions import sha256_b64


@pytest.fixture
def signed(s3_settings: S3Settings, raw_s3: Any) -> SignedS3Requests:
    raw_s3.create_bucket(Bucket=s3_settings.bucket)
    return SignedS3Requests(s3_settings, s3_settings.bucket)


def test_a_put_is_stored_with_its_metadata_and_read_back(signed: SignedS3Requests) -> None:
    key = f"signed/{uuid.uuid4().hex}~one"
    body = b"header bytes"
    signed.send(
        "PUT",
        key,
        {"x-amz-checksum-sha256": sha256_b64(body), "x-amz-meta-sha256": "abc"},
        body,
    )
    head = signed.send("HEAD", key, {"x-amz-checksum-mode": "ENABLED"})
    assert head.headers["x-amz-meta-sha256"] == "abc"
    assert int(head.headers["Content-Length"]) == len(body)
    ranged = signed.send("GET", key, {"Range": "bytes=0-5"})
    assert ranged.data == body[:6]


def test_bytes_that_differ_from_their_signed_checksum_are_refused_and_not_stored(
    signed: SignedS3Requests,
) -> None:
    key = f"signed/{uuid.uuid4().hex}"
    with pytest.raises(S3RefusedError) as refused:
        signed.send("PUT", key, {"x-amz-checksum-sha256": sha256_b64(b"other")}, b"these")
    assert 400 <= refused.value.status < 500
    with pytest.raises(S3RefusedError) as missing:
        signed.send("HEAD", key)
    assert missing.value.status == 404


def test_a_create_only_put_of_an_existing_key_is_refused(signed: SignedS3Requests) -> None:
    key = f"signed/{uuid.uuid4().hex}"
    headers = {"x-amz-checksum-sha256": sha256_b64(b"x"), "If-None-Match": "*"}
    signed.send("PUT", key, headers, b"x")
    with pytest.raises(S3RefusedError) as refused:
        signed.send("PUT", key, headers, b"x")
    assert refused.value.status == 412


class _Failing(http.server.BaseHTTPRequestHandler):
    status = 503
    code = "SlowDown"
    seen = 0

    def do_PUT(self) -> None:
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = f"<Error><Code>{self.code}</Code></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_s3() -> Iterator[tuple[type[_Failing], str]]:
    handler = type("Handler", (_Failing,), {"seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "attempts"),
    [(503, "SlowDown", 3), (500, "InternalError", 3), (403, "AccessDenied", 1)],
)
def test_transient_answers_are_retried_like_boto3_standard_mode_and_others_are_not(
    failing_s3: tuple[type[_Failing], str], status: int, code: str, attempts: int
) -> None:
    handler, endpoint = failing_s3
    handler.status, handler.code = status, code
    signed = SignedS3Requests(S3Settings(endpoint=endpoint, max_attempts=3), "bucket")
    with pytest.raises(S3RefusedError) as refused:
        signed.send("PUT", "key", {}, b"x")
    assert (refused.value.code, refused.value.status) == (code, status)
    assert handler.seen == attempts


async def test_a_missing_bucket_is_unavailable_not_a_missing_object(
    s3_settings: S3Settings,
) -> None:
    """NoSuchBucket answers 404 too; it means "wait" (created at start or first use), never
    "this instance does not exist"."""
    settings = s3_settings.model_copy(update={"bucket": f"missing-{uuid.uuid4().hex[:12]}"})
    bucket = Bucket(make_s3_client(settings), settings, {})
    with pytest.raises(UnavailableError):
        await bucket.open("tenant/study/series/sop.dcm")
    with pytest.raises(UnavailableError):
        await bucket.put("tenant/key", b"x", sha256_b64(b"x"), {})
