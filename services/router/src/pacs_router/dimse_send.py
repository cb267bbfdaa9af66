"""Send one instance to a DICOM destination with C-STORE (PS3.4 Annex B, PS3.7 9.1.1).

pynetdicom is blocking; each send runs in a worker thread. The association
(:class:`DimseLink`, kept open while instances of one SOP class and syntax follow each other)
proposes the instance's SOP class with its stored transfer syntax, and with each of the two
uncompressed little endian syntaxes (PS3.5 A.1, A.2), one presentation context each. When the
destination accepts the stored syntax the object goes from a temporary file, unchanged
(pynetdicom streams a Part 10 file's data set as is), so the peer receives the exact stored
bytes; when it only accepts an uncompressed syntax and the
instance is uncompressed, pynetdicom re-encodes the data set.

The result is one of three outcomes, which decide what the sender does:

- accepted: Success (0000), a warning (B000, B006, B007: stored with coercion or elements
  discarded, PS3.4 B.2.3), or Duplicate SOP Instance (0111: the peer already has it, which is
  what a redelivery looks like to a peer that refuses duplicates);
- :class:`DestinationUnavailableError` (retried without limit, the queue waits): no connection, the
  association rejected or aborted, no response, Refused: Out of Resources (A7xx);
- :class:`DestinationRefusedError` (dead-lettered with the reason): Error: Data Set Does Not Match
  SOP Class (A9xx), Error: Cannot Understand (Cxxx), SOP Class Not Supported (0122), Not
  Authorized (0124), or no presentation context the destination accepts for the instance;
- any other failure status (0110 Processing Failure, ...) is a plain error: retried a bounded
  number of times, then dead-lettered.
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pacs_common.errors import FailedPreconditionError, PacsError, UnavailableError
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from pacs_router.rules import DimseDestination, TlsOptions

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_WARNINGS = {0xB000, 0xB006, 0xB007}
_ALREADY_THERE = 0x0111
_REFUSED_FOR_GOOD = {0x0122, 0x0124}


class DestinationUnavailableError(UnavailableError):
    """The destination cannot take the instance now; the same send is tried again later."""


class DestinationRefusedError(FailedPreconditionError):
    """The destination refused the instance for good; it goes to the dead-letter topic."""


class DestinationFailedError(PacsError):
    """A failure status that may or may not repeat: retried a bounded number of times."""


@dataclass(frozen=True)
class SendResult:
    """What the destination answered."""

    status: int
    comment: str = ""


def ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """The client TLS context of a destination (PS3.15 B.1: TLS 1.2 or later)."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def classify(status: int, comment: str) -> SendResult:
    """Map a C-STORE response status to accepted (returned) or an error (raised)."""
    reason = f"C-STORE status 0x{status:04X}{': ' + comment if comment else ''}"
    if status == 0x0000 or status in _WARNINGS or status == _ALREADY_THERE:
        return SendResult(status, comment)
    if status & 0xFF00 == 0xA700:
        raise DestinationUnavailableError(f"{reason} (Refused: Out of Resources)")
    if status & 0xFF00 == 0xA900 or status & 0xF000 == 0xC000 or status in _REFUSED_FOR_GOOD:
        raise DestinationRefusedError(reason)
    raise DestinationFailedError(reason)


class DimseLink:
    """The association to one destination, kept open between sends of the same SOP class and
    transfer syntax (a study's instances mostly share both), released when another is needed,
    when it failed, or when idle (:meth:`release_if_idle`). Blocking: call it in a worker
    thread; one send at a time (a lock)."""

    def __init__(self, destination: DimseDestination, calling_ae: str, timeout_s: float) -> None:
        self.destination = destination
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self._assoc: Association | None = None
        self._key: tuple[str, str] | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()

    def send(self, part10: bytes, sop_class_uid: str, transfer_syntax_uid: str) -> SendResult:
        """Send one Part 10 object.

        Raises:
            DestinationUnavailableError, DestinationRefusedError, DestinationFailedError:
                see the module docstring.
        """
        key = (sop_class_uid, transfer_syntax_uid)
        with self._lock:
            reused = self._assoc is not None and self._assoc.is_established and self._key == key
            if not reused:
                self._release()
                self._assoc, self._key = self._associate(sop_class_uid, transfer_syntax_uid), key
            assert self._assoc is not None
            try:
                return _send_on(self._assoc, part10, sop_class_uid, transfer_syntax_uid)
            except DestinationUnavailableError:
                self._release()
                if not reused:
                    raise
                # The peer may have closed an association we kept: once more on a fresh one.
                self._assoc = self._associate(sop_class_uid, transfer_syntax_uid)
                return _send_on(self._assoc, part10, sop_class_uid, transfer_syntax_uid)
            finally:
                self._last_used = time.monotonic()
                if self._assoc is not None and not self._assoc.is_established:
                    self._assoc = self._key = None

    def release_if_idle(self, idle_s: float) -> None:
        """Release the association if nothing was sent on it for ``idle_s`` seconds (a kept
        association holds one of the peer's association slots)."""
        if time.monotonic() - self._last_used < idle_s:
            return
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()

    def close(self) -> None:
        """Release the association; safe to call twice."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        assoc, self._assoc, self._key = self._assoc, None, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def _associate(self, sop_class_uid: str, transfer_syntax_uid: str) -> Association:
        destination = self.destination
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        # One context per syntax, so that the peer accepts or refuses the stored syntax on its
        # own (within one context it would pick the syntax it prefers).
        syntaxes = list(dict.fromkeys([transfer_syntax_uid, *_UNCOMPRESSED]))
        contexts = [build_context(sop_class_uid, [syntax]) for syntax in syntaxes]
        tls_args = None
        if destination.tls.enabled:
            # The host name is sent for SNI; it is checked only when verify_hostname is set.
            tls_args = (ssl_context(destination.tls), destination.host)
        try:
            assoc = ae.associate(
                destination.host,
                destination.port,
                contexts=contexts,
                ae_title=destination.ae_title,
                tls_args=tls_args,
            )
        except (OSError, ssl.SSLError) as exc:
            raise DestinationUnavailableError(f"cannot connect: {exc}") from exc
        if not assoc.is_established and assoc.rejected_contexts:
            # The peer answered, but accepted no context for this SOP class (PS3.8 9.3.3.2,
            # results 3 and 4): sending again cannot help.
            raise DestinationRefusedError(
                f"the destination rejected every presentation context of SOP class "
                f"{sop_class_uid}: SOP class not supported"
            )
        if not assoc.is_established:
            where = f"{destination.ae_title}@{destination.host}:{destination.port}"
            if assoc.is_rejected:
                raise DestinationUnavailableError(f"association rejected by {where}")
            raise DestinationUnavailableError(f"{_why_not_connected(destination)} ({where})")
        return assoc


def _why_not_connected(destination: DimseDestination) -> str:
    """pynetdicom reports a refused connection and a failed TLS handshake as an abort: connect
    again, without DICOM, to tell the operator which."""
    address = (destination.host, destination.port)
    try:
        with socket.create_connection(address, timeout=5) as sock:
            if destination.tls.enabled:
                context = ssl_context(destination.tls)
                with context.wrap_socket(sock, server_hostname=destination.host):
                    pass
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc}"
    except OSError as exc:
        return f"cannot connect: {exc}"
    return "association aborted"


def _send_on(
    assoc: Association, part10: bytes, sop_class_uid: str, stored_syntax: str
) -> SendResult:
    accepted = [
        cx.transfer_syntax[0]
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class_uid and cx.transfer_syntax
    ]
    if stored_syntax in accepted:
        # The stored bytes as they are: pynetdicom sends a Part 10 file's data set unchanged.
        with tempfile.TemporaryDirectory(prefix="pacs-route-") as folder:
            path = Path(folder) / "instance.dcm"
            path.write_bytes(part10)
            response = assoc.send_c_store(path)
    elif stored_syntax in _UNCOMPRESSED and any(s in _UNCOMPRESSED for s in accepted):
        response = assoc.send_c_store(dcmread(BytesIO(part10)))
    else:
        raise DestinationRefusedError(
            "the destination accepts no transfer syntax this instance can be sent in "
            f"(SOP class {sop_class_uid}, stored as {stored_syntax}): SOP class not supported"
        )
    if response is None or "Status" not in response:
        raise DestinationUnavailableError("no C-STORE response (timeout or association aborted)")
    comment = str(response.get("ErrorComment", "") or "")
    return classify(int(response.Status), comment)
