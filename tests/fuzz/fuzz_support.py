"""Support of the fuzzing suite: the gateway as a process, PDU builders (PS3.8 9.3), and the
liveness check every example ends with (a well-behaved peer's C-ECHO, answered in time)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pacs_common.local import free_port
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import encode

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

EXAMPLES = int(os.environ.get("PACS_FUZZ_EXAMPLES", "40"))
"""Examples per fuzzing test: small in CI, ``make fuzz`` sets it so the suite sends >= 10 000."""
ECHO_DEADLINE_S = float(os.environ.get("PACS_FUZZ_ECHO_DEADLINE_S", "3.0"))
"""The liveness bound: a well-behaved peer's association and C-ECHO, answered within it. The
issue's figure is 1 s (``make fuzz`` sets it); CI on a shared 2-core machine under a load of
10+ measured up to 1.5 s, so its default is generous: the check is that the gateway answers
everyone else at all while it is fuzzed, not how fast (the longest echo is printed)."""
ECHO_TIMES: list[float] = []
GOOD_PEER = "127.0.0.2"
"""The well-behaved peer's source address (any 127/8 address reaches the loopback listener);
the hostile inputs come from 127.0.0.1, so per-address limits never count them together."""


def item(item_type: int, payload: bytes) -> bytes:
    """A PS3.8 9.3.2 item or sub-item: type, reserved, 2-byte length, payload."""
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def pdu(pdu_type: int, body: bytes) -> bytes:
    """A PDU: type, reserved, 4-byte length, body (PS3.8 9.3.1)."""
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def presentation_context(context_id: int, abstract: str, syntaxes: list[str]) -> bytes:
    """A presentation context item of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""
    payload = bytes([context_id, 0, 0, 0]) + item(0x30, abstract.encode())
    return item(0x20, payload + b"".join(item(0x40, ts.encode()) for ts in syntaxes))


def associate_rq(contexts: list[bytes] | None = None, calling: bytes = b"FUZZSCU") -> bytes:
    """A valid A-ASSOCIATE-RQ to CLOUDPACS (PS3.8 9.3.2) with ``contexts`` (default: Secondary
    Capture in explicit and deflated little endian as 1 and 3, Verification as 5)."""
    if contexts is None:
        contexts = [
            presentation_context(1, SECONDARY_CAPTURE, [EXPLICIT_LE]),
            presentation_context(3, SECONDARY_CAPTURE, [DEFLATED]),
            presentation_context(5, VERIFICATION, [IMPLICIT_LE]),
        ]
    user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.826.0.1.3680043"))
    body = (
        struct.pack(">HH", 1, 0)
        + b"CLOUDPACS".ljust(16)
        + calling.ljust(16)
        + bytes(32)
        + item(0x10, APPLICATION_CONTEXT.encode())
        + b"".join(contexts)
        + user
    )
    return pdu(0x01, body)


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """A presentation data value item (PS3.8 9.3.5.1): ``control`` bit 0 command, bit 1 last."""
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def c_store_command(sop_instance_uid: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR little endian."""
    command = Dataset()
    command.AffectedSOPClassUID = SECONDARY_CAPTURE
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = sop_instance_uid
    command.CommandGroupLength = 0
    body = encode(command, True, True)
    assert body is not None
    command.CommandGroupLength = len(body) - 12  # the group length element itself is 12 bytes
    encoded = encode(command, True, True)
    assert encoded is not None
    return encoded


def read_some(sock: socket.socket, deadline_s: float = 5.0) -> bytes:
    """What the gateway answers before it closes or ``deadline_s`` passes (at most 64 KiB)."""
    sock.settimeout(deadline_s)
    received = b""
    with contextlib.suppress(OSError):
        while len(received) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            if received[:1] in (b"\x03", b"\x07") or len(received) >= 6:
                # a reject or abort ends it; anything else: one answer is enough
                break
    return received


def hostile_connection(port: int) -> socket.socket:
    """A connection from the hostile address."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a gateway that already closed or reset the connection."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


@dataclass
class GatewayProcess:
    """A gateway process (two workers sharing the port), upstreams on closed ports."""

    process: subprocess.Popen[bytes]
    dicom_port: int
    grpc_port: int
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def echo_in_time(self) -> float:
        """A well-behaved peer's association and C-ECHO; how long it took.

        Raises:
            AssertionError: no Success answer within :data:`ECHO_DEADLINE_S`.
        """
        assert self.alive(), f"the gateway died:\n{self.log.read_text()[-3000:]}"
        ae = AE(ae_title="GOODSCU")
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ECHO_DEADLINE_S * 5
        started = time.monotonic()
        assoc = ae.associate(
            "127.0.0.1", self.dicom_port, ae_title="CLOUDPACS", bind_address=(GOOD_PEER, 0)
        )
        assert assoc.is_established, "the well-behaved peer's association was not accepted"
        try:
            status = assoc.send_c_echo()
            elapsed = time.monotonic() - started
        finally:
            assoc.release()
        assert int(status.Status) == 0, status
        ECHO_TIMES.append(elapsed)
        assert elapsed < ECHO_DEADLINE_S, f"C-ECHO took {elapsed:.2f} s"
        return elapsed


@contextlib.contextmanager
def gateway_process(run_dir: Path, **env: str) -> Iterator[GatewayProcess]:
    """Start ``python -m pacs_gateway`` with two workers; SIGTERM it afterwards."""
    dicom_port, grpc_port = free_port(), free_port()
    closed = free_port()
    log = run_dir / "gateway.log"
    settings = {
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(dicom_port),
        "PACS_GATEWAY_GRPC_PORT": str(grpc_port),
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": "2",
        "PACS_GATEWAY_STORAGE_TIMEOUT": "2",
        "PACS_GATEWAY_QUERY_TIMEOUT": "2",
        "PACS_GATEWAY_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", "pacs_gateway"],
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, dicom_port, grpc_port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert gateway.alive(), log.read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", dicom_port), timeout=1),
            ):
                break
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
