"""Single-object S3 requests (PUT of bytes, GET, HEAD, DELETE) signed by botocore's SigV4
signer and sent with urllib3, without the boto3 client's request pipeline.

Why by hand: every write costs storage three of these (the UID claim, the intent record and
the ranged read at commit), and boto3's client machinery (parameter validation, event hooks,
serialisation, response parsing) costs about 1.1 ms of CPU per request against 0.5 ms for the
same request signed by the same signer class and sent by the same HTTP library (measured on
this machine, 150-byte PUTs and 64 KiB ranged GETs to versitygw). No maintained library sends
signed S3 requests more cheaply; the signing itself stays botocore's. The rest of S3's API
(multipart, copy, listings, batch deletes) stays on the boto3 client.

What boto3 did and is kept here: SigV4 with an unsigned payload (as ``make_s3_client``
configures it: the body's integrity is the signed ``x-amz-checksum-sha256``, which S3
verifies), the standard retry mode (connection errors, 5xx and throttling are retried up to
``max_attempts`` times with jittered exponential backoff, botocore's ``standard`` formula),
timeouts and TLS verification from :class:`pacs_common.settings.S3Settings`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from pacs_common.settings import S3Settings

# botocore.retries.standard: the status codes and error codes it retries.
_RETRIED_STATUS = {500, 502, 503, 504}
_RETRIED_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
}
_MAX_BACKOFF_S = 20.0
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_UNSIGNED_PAYLOAD_CONFIG = Config(s3={"payload_signing_enabled": False})


class S3RefusedError(Exception):
    """S3 answered with an error status (after retries); ``code`` is its XML error code, or
    the status as text when the response has no body (HEAD)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{code} ({status})")
        self.code = code
        self.status = status


class S3ConnectionError(Exception):
    """S3 could not be reached, or the connection broke (after retries)."""


class SignedS3Requests:
    """Signs and sends single-object requests to one bucket (thread-safe: one urllib3 pool)."""

    def __init__(self, settings: S3Settings, bucket: str) -> None:
        self._base = f"{settings.endpoint.rstrip('/')}/{bucket}/"
        self._signer = S3SigV4Auth(
            Credentials(
                settings.access_key.get_secret_value(), settings.secret_key.get_secret_value()
            ),
            "s3",
            settings.region,
        )
        self._attempts = settings.max_attempts
        tls: dict[str, Any] = {}
        if settings.ca_bundle:
            tls["ca_certs"] = settings.ca_bundle
        elif not settings.verify_tls:
            tls["cert_reqs"] = "CERT_NONE"
        self._http = urllib3.PoolManager(
            maxsize=32,  # as make_s3_client's max_pool_connections
            block=False,
            retries=False,  # retried below, the way boto3's standard mode does
            timeout=urllib3.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s
            ),
            **tls,
        )

    def send(
        self,
        method: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        query: Mapping[str, str] | None = None,
        *,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One signed request for ``key``; a 2xx response (its body unread when ``stream``,
        then the caller must ``release_conn()`` it).

        Raises:
            S3RefusedError: S3 refused it (non-retriable, or still failing after retries).
            S3ConnectionError: S3 could not be reached after retries.
        """
        url = self._base + quote(key, safe="/~")
        if query:
            url += "?" + urlencode(query)
        attempt = 1
        while True:
            try:
                response = self._send_once(method, url, headers or {}, body, stream)
            except urllib3.exceptions.HTTPError as exc:
                if attempt >= self._attempts:
                    raise S3ConnectionError(type(exc).__name__) from exc
            else:
                if response.status < 300:
                    return response
                error = _error_of(response)
                if attempt >= self._attempts or not _retried(error):
                    raise error
            time.sleep(min(random.random() * 2 ** (attempt - 1), _MAX_BACKOFF_S))  # noqa: S311
            attempt += 1

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        # The signer reads the client's configuration from here: unsigned payload, as
        # make_s3_client configures boto3 (it would hash the body otherwise, over plain HTTP).
        request.context["client_config"] = _UNSIGNED_PAYLOAD_CONFIG
        if body is not None:
            request.headers["Content-Length"] = str(len(body))
        self._signer.add_auth(request)  # adds X-Amz-Date, X-Amz-Content-SHA256, Authorization
        return self._http.request(
            method,
            url,
            body=body,
            headers=dict(request.headers.items()),
            preload_content=not stream,
            redirect=False,
        )


def _error_of(response: urllib3.BaseHTTPResponse) -> S3RefusedError:
    data = response.data
    response.release_conn()
    found = _ERROR_CODE.search(data or b"")
    code = found.group(1).decode("ascii", "replace") if found else str(response.status)
    return S3RefusedError(code, response.status)


def _retried(error: S3RefusedError) -> bool:
    return error.status in _RETRIED_STATUS or error.code in _RETRIED_CODES
