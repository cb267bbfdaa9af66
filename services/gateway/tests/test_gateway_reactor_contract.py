"""The contract between ``pacs_gateway.event_reactor`` and the pynetdicom internals it overrides.

``event_reactor`` replaces pynetdicom's polling reactor loops by loops that wait on the socket;
it relies on private names and on the exact shape of the methods it copies. These tests fail
when any of that changes (a pynetdicom upgrade), and check the behaviour that matters: an idle
association's threads sleep, a PDU still gets through at once, and the timeouts still fire.

When a fingerprint test fails after an upgrade: read the new source of that method, carry any
change into ``event_reactor`` (or drop the override), then update ``PYNETDICOM_VERSION``, the pin
in ``services/gateway/pyproject.toml`` and the fingerprints below.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import queue
import socket
import statistics
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pacs_gateway.dimse_server import GatewayAssociationServer
from pacs_gateway.event_reactor import (
    PYNETDICOM_VERSION,
    EventAssociation,
    EventDUL,
    EventRequestHandler,
    request_handler_class,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.timer import Timer
from pynetdicom.transport import RequestHandler

# sha256 (first 16 hex digits) of inspect.getsource() of every pynetdicom internal that
# event_reactor copies, replaces, or whose attributes it reads or swaps.
FINGERPRINTS = {
    "dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "dul.DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "dul.DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "dul.DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "dul.DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    "dul.DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "dul.DULServiceProvider.receive_pdu": "fa67339834ca998c",
    "dul.DULServiceProvider.peek_next_pdu": "7bdb626e1247e1b6",
    "dul.DULServiceProvider.idle_timer_expired": "0150c19fda68f6e9",
    "dul.DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    "dul.DULServiceProvider._decode_pdu": "fc71dd1bf853e1ce",
    "transport.AssociationSocket.recv": "6bc20a33b1b7cfe7",
    "association.Association.__init__": "eb07516b8009ad8f",
    "association.Association.run_reactor": "ed8bbbe3b3d6ddae",
    "association.Association._run_reactor": "f28838c5559e462a",
    "association.Association.kill": "8f9713666a7f4cff",
    "association.Association.release": "c7d713502b77d702",
    "association.Association._abort_blocking": "10b43ef8c63c6764",
    "association.Association._serve_request": "2f24c1759cdf6c8c",
    "association.Association.acse_timeout.fset": "f357778b5c4db7b2",
    "association.Association.network_timeout.fset": "d1e01042128ea4a2",
    "acse.ACSE.is_aborted": "ad2eb3f545a9ed05",
    "acse.ACSE.is_release_requested": "894b33d21a8dec8e",
    "dimse.DIMSEServiceProvider.__init__": "bbecd186810e7700",
    "dimse.DIMSEServiceProvider.get_msg": "890e3e04283f5aeb",
    "transport.AssociationSocket.__init__": "1f0325fdef2cc353",
    "transport.AssociationSocket.ready.fget": "3eb58e3d39dc076d",
    "transport.AssociationSocket.close": "c726c8db53813d55",
    "transport.RequestHandler.handle": "034823fb4df3a874",
    "transport.RequestHandler._create_association": "05c8d12b79863cdb",
    "timer.Timer": "77ddae7423f544b1",
}


def _resolve(dotted: str) -> Any:
    module_name, _, rest = dotted.partition(".")
    obj: Any = importlib.import_module(f"pynetdicom.{module_name}")
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj


def test_pynetdicom_is_the_pinned_version() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"pynetdicom=={PYNETDICOM_VERSION}" in dependencies
    assert pynetdicom.__version__ == PYNETDICOM_VERSION
    assert request_handler_class() is EventRequestHandler


@pytest.mark.parametrize("dotted", sorted(FINGERPRINTS))
def test_relied_on_internals_are_unchanged(dotted: str) -> None:
    source = inspect.getsource(_resolve(dotted))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == FINGERPRINTS[dotted], (
        f"pynetdicom.{dotted} changed: check pacs_gateway.event_reactor against it"
    )


def test_the_event_association_replaces_the_polling_parts() -> None:
    ae = AE()
    ae.acse_timeout = 7
    ae.network_timeout = 9
    stock = Association(ae, "acceptor")
    # what event_reactor swaps or reads exists in pynetdicom's objects, with these types
    for name in ("event_queue", "to_provider_queue", "to_user_queue"):
        assert type(getattr(stock.dul, name)) is queue.Queue, name
    assert type(stock.dimse.msg_queue) is queue.Queue
    assert isinstance(stock.dul.artim_timer, Timer) and isinstance(stock.dul._idle_timer, Timer)
    for name in ("_kill", "_is_paused", "_reactor_checkpoint", "_dul_ready"):
        assert name in vars(stock), name
    assert "_kill_thread" in vars(stock.dul)
    assert stock.dul._run_loop_delay == 0.001  # the polling this module removes

    assoc = EventAssociation(ae, "acceptor")
    assert isinstance(assoc.dul, EventDUL)
    # the timeouts reach the new DUL's timers (pynetdicom's setters wrote to the old one)
    assert assoc.dul.artim_timer.timeout == 7
    assert assoc.dul._idle_timer.timeout == 9
    for waking in (
        assoc.dul.event_queue,
        assoc.dul.to_provider_queue,
        assoc.dul.to_user_queue,
        assoc.dimse.msg_queue,
    ):
        assert type(waking) is not queue.Queue and isinstance(waking, queue.Queue)
    assert assoc._kill is False and assoc.dul._kill_thread is False


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start Verification SCPs built like the gateway's listener (its request handler unless
    ``handler`` names another); stopped afterwards."""
    servers: list[GatewayAssociationServer] = []

    def start(handler: type[RequestHandler] | None = None, **timeouts: float) -> Any:
        ae = AE(ae_title="CLOUDPACS")
        for name, value in timeouts.items():
            setattr(ae, name, value)
        ae.add_supported_context(Verification)
        server = ae.make_server(
            ("127.0.0.1", 0),
            contexts=ae.supported_contexts,
            server_class=GatewayAssociationServer,
            **({} if handler is None else {"request_handler": handler}),
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        for assoc in server.active_associations:
            assoc.abort()
        server.shutdown()


def _associate(server: Any) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="CLOUDPACS")
    assert assoc.is_established
    return assoc


def _acceptor(server: Any) -> Any:
    deadline = time.monotonic() + 5
    while not server.active_associations:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return server.active_associations[0]


def _context_switches(thread: threading.Thread) -> int:
    """Times the OS switched away from ``thread`` (each sleep or wait is one)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def _wakeups_per_second(acceptor: Any) -> tuple[int, int]:
    threads = (acceptor.dul, acceptor)
    before = [_context_switches(t) for t in threads]
    time.sleep(1.0)
    after = [_context_switches(t) for t in threads]
    dul, assoc = (a - b for a, b in zip(after, before, strict=True))
    return dul, assoc


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_an_idle_association_sleeps_on_its_socket(serve: Any) -> None:
    server = serve()
    scu = _associate(server)
    try:
        acceptor = _acceptor(server)
        assert isinstance(acceptor, EventAssociation)  # what the gateway's server builds
        time.sleep(0.2)  # past negotiation
        dul_wakeups, assoc_wakeups = _wakeups_per_second(acceptor)
        assert dul_wakeups <= 5 and assoc_wakeups <= 5, (dul_wakeups, assoc_wakeups)

        # ... and a PDU still gets through at once (a missed wake-up would cost a second)
        round_trips = []
        for _ in range(20):
            started = time.perf_counter()
            status = scu.send_c_echo()
            round_trips.append(time.perf_counter() - started)
            assert status.Status == 0x0000
            time.sleep(0.01)
        assert statistics.median(round_trips) < 0.02, round_trips
        assert max(round_trips) < 0.2, round_trips
    finally:
        scu.release()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_the_probe_sees_pynetdicom_polling(serve: Any) -> None:
    """The measurement above can fail: pynetdicom's own reactors wake ~1000 times a second."""
    server = serve(handler=RequestHandler)
    scu = _associate(server)
    try:
        acceptor = _acceptor(server)
        assert not isinstance(acceptor, EventAssociation)
        time.sleep(0.2)
        dul_wakeups, assoc_wakeups = _wakeups_per_second(acceptor)
        assert dul_wakeups > 100 and assoc_wakeups > 100, (dul_wakeups, assoc_wakeups)
    finally:
        scu.release()


def test_the_network_timeout_aborts_an_idle_association_on_time(serve: Any) -> None:
    server = serve(network_timeout=0.5)
    started = time.monotonic()
    scu = _associate(server)
    while scu.is_established and time.monotonic() - started < 5:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    assert scu.is_aborted
    assert 0.4 < elapsed < 1.5, elapsed


def test_artim_closes_a_connection_that_never_asks_to_associate(serve: Any) -> None:
    server = serve(acse_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.server_address[1])) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""  # PS3.8 9.1.5: no A-ASSOCIATE-RQ before ARTIM: closed
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5, elapsed


def test_a_peer_that_vanishes_ends_the_association(serve: Any) -> None:
    server = serve()
    scu = _associate(server)
    acceptor = _acceptor(server)
    started = time.monotonic()
    scu.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the peer's connection is gone
    acceptor.join(timeout=5)
    assert not acceptor.is_alive() and not acceptor.dul.is_alive()
    assert time.monotonic() - started < 0.5
    assert acceptor.is_aborted
    scu.kill()
