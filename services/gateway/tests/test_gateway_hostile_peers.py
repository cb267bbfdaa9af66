"""Bounded work per peer: oversized PDUs and data sets, connection floods, silent connections,
and limits shared by every worker process of a pod (pacs_gateway.peer_limits,
pacs_gateway.event_reactor's bounded PDU reads)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import sys
import time

from gateway_helpers import (
    closed_port,
    eventually,
    free_port,
    scu_association,
    wait_for_port,
)
from pacs_gateway.dimse import codes
from pacs_gateway.peer_limits import LimitSettings, PeerLimits, clear_slot, new_table
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
A_ABORT = 0x07


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def _send_until_refused(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes; how many the gateway took before it closed the connection."""
    chunk = b"\0" * (1024 * 1024)
    sent = 0
    sock.settimeout(20)
    with contextlib.suppress(OSError):
        while sent < total:
            sent += sock.send(chunk)
    return sent


def _first_pdu_type(sock: socket.socket) -> int | None:
    """The type of the first PDU the gateway sent, None if it closed without one."""
    sock.settimeout(20)
    try:
        data = sock.recv(6)
    except OSError:
        return None
    return data[0] if data else None


def _echo_from(port: int, source: str) -> int:
    """A C-ECHO from a well-behaved peer at loopback address ``source``: its status."""
    with scu_association(port, codes.VERIFICATION, "GOODSCU", source=source) as assoc:
        status = assoc.send_c_echo()
    return int(status.Status)


async def test_an_oversized_pdu_is_aborted_as_its_header_arrives(start_gateway) -> None:
    """A P-DATA-TF announcing 2 GiB gets an A-ABORT before its body is read: the gateway
    takes only what the kernel's socket buffers hold, not the 64 MiB the peer tries to send."""
    app = await start_gateway(max_pdu_size=65536)
    sock = await asyncio.to_thread(_connect, app.dicom_port)
    with sock:
        sock.sendall(struct.pack(">BBL", 0x04, 0, 2 * 1024**3))
        sent = await asyncio.to_thread(_send_until_refused, sock, 64 * 1024**2)
        assert sent < 16 * 1024**2, sent
    sock = await asyncio.to_thread(_connect, app.dicom_port)
    with sock:  # an A-ASSOCIATE-RQ announcing 1 GiB: the same
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1024**3))
        assert await asyncio.to_thread(_first_pdu_type, sock) == A_ABORT


async def test_a_data_set_past_its_bound_aborts_the_association(start_gateway) -> None:
    """C-STORE of a data set larger than max_dataset_bytes: the association is aborted while
    the fragments arrive (storage is never called: its port is closed)."""
    app = await start_gateway(max_dataset_bytes=256 * 1024, max_pdu_size=16384)
    dataset = Dataset()
    dataset.SOPClassUID = SECONDARY_CAPTURE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.add_new(0x7FE00010, "OB", b"\0" * (1024 * 1024))
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    def store() -> tuple[bool, Dataset]:
        from pynetdicom import AE  # noqa: PLC0415

        ae = AE(ae_title="BIGSCU")
        ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="CLOUDPACS")
        assert assoc.is_established
        status = assoc.send_c_store(dataset)
        # The sender sees the A-ABORT, or a reset if it was still sending when the gateway
        # closed (its kernel then drops the unread abort): either way the association ended.
        deadline = time.monotonic() + 10  # its reactor notices the closed socket shortly
        while assoc.is_established and not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = assoc.is_aborted or not assoc.is_established
        assoc.release()
        return ended, status

    ended, status = await asyncio.to_thread(store)
    assert ended
    assert "Status" not in status  # no response: the request never completed

    async def none_open() -> bool:  # the aborted association does not stay counted as open
        return not app.dimse.active_associations()

    assert await eventually(none_open, within_s=10)


async def test_a_connection_flood_from_one_address_does_not_starve_another(
    start_gateway,
) -> None:
    """40 idle connections from 127.0.0.1 (more than the process's 32 associations): those
    past the per-address limit are closed at once, and a peer at 127.0.0.2 is served."""
    app = await start_gateway(max_connections_per_address=8, max_pending_per_address=8)
    flood = [await asyncio.to_thread(_connect, app.dicom_port) for _ in range(40)]
    try:

        def closed_by_gateway(sock: socket.socket) -> bool:
            sock.settimeout(0.5)
            try:
                return sock.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        closed = [await asyncio.to_thread(closed_by_gateway, s) for s in flood]
        assert sum(closed) >= 40 - 8, closed
        assert await asyncio.to_thread(_echo_from, app.dicom_port, "127.0.0.2") == 0
    finally:
        for sock in flood:
            sock.close()


async def test_random_bytes_from_many_connections_do_not_stop_the_service(
    start_gateway,
) -> None:
    """100 connections sending random bytes (PDU types and lengths included) at once; a
    well-behaved peer's C-ECHO is answered meanwhile and afterwards."""
    app = await start_gateway()
    rng = random.Random(17)

    def garbage() -> None:
        try:
            with _connect(app.dicom_port) as sock:
                sock.sendall(rng.randbytes(rng.randint(1, 4096)))
        except OSError:
            pass  # refused or reset: what a hostile peer should get

    flood = [asyncio.to_thread(garbage) for _ in range(100)]
    echo = asyncio.to_thread(_echo_from, app.dicom_port, "127.0.0.3")
    results = await asyncio.gather(echo, *flood)
    assert results[0] == 0
    assert await asyncio.to_thread(_echo_from, app.dicom_port, "127.0.0.3") == 0


async def test_a_silent_connection_is_closed_by_artim(start_gateway) -> None:
    """A connection that never sends an A-ASSOCIATE-RQ is closed when ARTIM expires
    (PS3.8 9.1.5), and its place is free again."""
    app = await start_gateway(artim_timeout=1, max_connections_per_address=1)
    sock = await asyncio.to_thread(_connect, app.dicom_port)
    with sock:
        started = time.monotonic()
        sock.settimeout(30)
        assert sock.recv(16) in (b"", bytes([A_ABORT]))
        assert time.monotonic() - started < 25  # ARTIM, not the 60 s network timeout

    async def place_free() -> bool:
        return app.peer_limits.connections("127.0.0.1") == 0

    assert await eventually(place_free, within_s=10)
    assert await asyncio.to_thread(_echo_from, app.dicom_port, "127.0.0.1") == 0


def test_limits_count_every_process_row_and_a_dead_row_is_cleared() -> None:
    settings = LimitSettings(
        max_connections_per_address=2,
        max_pending_per_address=2,
        max_pending_connections=10,
        pod_max_associations=1,
    )
    table = new_table(2)
    primary, worker = PeerLimits(table, 0, settings), PeerLimits(table, 1, settings)
    first = worker.admit_connection("10.0.0.1")
    second = primary.admit_connection("10.0.0.1")
    assert not isinstance(first, str) and not isinstance(second, str)
    assert isinstance(primary.admit_connection("10.0.0.1"), str)  # the pod's limit
    assert not isinstance(primary.admit_connection("10.0.0.2"), str)  # another address
    assert first.associate()
    assert not second.associate()  # pod_max_associations = 1, held by the worker
    clear_slot(table, 1)  # the worker died: its row is zeroed before its replacement starts
    assert primary.associations() == 0
    assert second.associate()
    second.release()
    second.release()  # idempotent
    assert primary.connections("10.0.0.1") == 0


async def test_the_per_address_limit_holds_across_worker_processes() -> None:
    """Two worker processes, a per-address limit of 4: however the kernel spreads connections
    over the processes, the fifth idle connection from one address is closed at once."""
    port = free_port()
    env = {
        **os.environ,
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(port),
        "PACS_GATEWAY_GRPC_PORT": "0",
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": "1",
        "PACS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "4",
        "PACS_GATEWAY_MAX_PENDING_PER_ADDRESS": "4",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    held: list[socket.socket] = []
    try:
        await wait_for_port(port, within_s=30)

        async def both_listening() -> bool:  # the worker's socket is bound too
            out = await asyncio.create_subprocess_exec(
                "ss", "-Hltn", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
            )
            text, _ = await out.communicate()
            return len([line for line in text.decode().splitlines() if line.strip()]) == 2

        assert await eventually(both_listening, within_s=30)
        for _ in range(12):
            held.append(await asyncio.to_thread(_connect, port))

        def open_after(sock: socket.socket) -> bool:
            sock.settimeout(1.0)
            try:
                return sock.recv(1) != b""
            except TimeoutError:
                return True
            except OSError:
                return False

        still_open = [await asyncio.to_thread(open_after, s) for s in held]
        assert sum(still_open) <= 4 + 1, still_open  # +1: two processes deciding at once
        assert sum(still_open) >= 2, still_open
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 60)
