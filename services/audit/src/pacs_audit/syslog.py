"""RFC 5424 syslog messages over TLS (RFC 5425), as PS3.15 A.6 asks for audit messages.

Hand-written because it is a few lines and no maintained Python library sends RFC 5425
(octet-counted framing over TLS): the standard library's ``SysLogHandler`` speaks RFC 3164
framing over UDP/TCP without TLS.

- Message (RFC 5424 6): ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``; PRI with
  facility 10 (security/authorization, A.6), severity notice for a success and warning for a
  failure; MSGID ``IHE+RFC-3881`` (A.6); no structured data; MSG is the XML, UTF-8 with its BOM
  (RFC 5424 6.4).
- Framing (RFC 5425 4.3): ``MSG-LEN SP SYSLOG-MSG``, the length in octets.
- Transport: TLS 1.2 or later, verifying the collector's certificate against the configured
  CA (RFC 5425 5.1), presenting a client certificate when one is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

FACILITY_AUTH = 10
SEVERITY_WARNING, SEVERITY_NOTICE = 4, 5
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"


def message(
    xml: bytes, timestamp: str, *, failure: bool, app_name: str = "cloudpacs", hostname: str = ""
) -> bytes:
    """One RFC 5424 message carrying ``xml``."""
    pri = FACILITY_AUTH * 8 + (SEVERITY_WARNING if failure else SEVERITY_NOTICE)
    host = (hostname or socket.gethostname() or "-")[:255]
    header = f"<{pri}>1 {timestamp or '-'} {host} {app_name[:48]} {os.getpid()} {MSGID} - "
    return header.encode("ascii", "replace") + BOM + xml


def frame(syslog_message: bytes) -> bytes:
    """RFC 5425 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(syslog_message)).encode() + b" " + syslog_message


@dataclass(frozen=True)
class CollectorSettings:
    """Where the syslog collector is and how to trust it."""

    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+, verifying the collector against ``ca_file`` (system trust without)."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class SyslogSender:
    """One TLS connection to the collector, opened on demand and reopened after a failure."""

    def __init__(self, collector: CollectorSettings, timeout_s: float = 10.0) -> None:
        self.collector = collector
        self.timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._context = collector.ssl_context()

    async def send(self, messages: list[bytes]) -> None:
        """Send framed messages and wait until the socket took them.

        Raises:
            OSError: the collector is unreachable or the connection broke (nothing is known
                to have arrived: send them again).
            TimeoutError: the collector did not answer in time.
        """
        async with asyncio.timeout(self.timeout_s):
            if self._reader is not None and self._reader.at_eof():
                # The collector closed the connection (it stopped): RFC 5425 has no
                # acknowledgement, so writing into the dead connection would lose messages.
                await self.close()
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(
                    self.collector.host,
                    self.collector.port,
                    ssl=self._context,
                    server_hostname=self.collector.server_name or self.collector.host,
                )
            writer = self._writer
            try:
                writer.write(b"".join(frame(m) for m in messages))
                await writer.drain()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Close the connection (reopened by the next send)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
