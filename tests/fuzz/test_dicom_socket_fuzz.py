"""Fuzzing the gateway's DICOM socket and IngestService with malformed input (hypothesis
generates it; derandomized, so every run sends the same inputs and a failure reproduces).

One gateway process (two workers) serves the whole module. Every example is sent from 127.0.0.1
on a connection of its own; after every example a well-behaved peer at 127.0.0.2 opens an
association and gets its C-ECHO answered within ``PACS_FUZZ_ECHO_DEADLINE_S`` (1 s with ``make
fuzz``, 3 s in CI on a shared machine): the functional liveness check. A crash is the process
exiting or the echo failing.

Size: ``PACS_FUZZ_EXAMPLES`` examples per test (40 in CI); ``make fuzz`` runs 2 000 per test,
10 000 inputs over the five socket tests, plus the gRPC ones.
"""

from __future__ import annotations

import functools
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pacs.ingest.v1 import ingest_service_pb2 as ingest_pb
from pacs_common.auth import Role
from pacs_common.local import sync_channel
from pacs_testkit.hydra import Hydra
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from tests.fuzz.fuzz_support import (
    ECHO_TIMES,
    EXAMPLES,
    GatewayProcess,
    associate_rq,
    c_store_command,
    gateway_process,
    hostile_connection,
    item,
    pdu,
    pdv,
    presentation_context,
    read_some,
    send_quietly,
)

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

stats = {"inputs": 0}
ANSWER_WAIT_S = 0.3
"""How long an example waits for an answer: a malformed PDU the gateway keeps waiting on (a
length it has not got yet) gets none, and the example moves on (the gateway's socket timeout
and ARTIM close it later)."""


@functools.cache
def _bomb_tail() -> bytes:
    """300 MiB of zeros, deflated (about 300 KiB), after an OB element header announcing
    them: compressed once for the whole module."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 300 * 1024**2)
    zeros = bytes(1024 * 1024)
    parts = [deflater.compress(head)] + [deflater.compress(zeros) for _ in range(300)]
    return b"".join(parts) + deflater.flush()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, infra_env: dict[str, str]
) -> Iterator[GatewayProcess]:
    run_dir: Path = tmp_path_factory.mktemp("fuzz")
    # The hostile address may keep more connections pending than by default, so that most
    # examples reach the parsers instead of the per-address limit (which has tests of its own).
    with gateway_process(run_dir, PACS_GATEWAY_MAX_PENDING_PER_ADDRESS="32") as process:
        yield process
        process.echo_in_time()
    times = sorted(ECHO_TIMES) or [0.0]
    print(  # the suite's size and the liveness figures, in the log
        f"\nfuzz inputs sent: {stats['inputs']}; C-ECHO of the good peer: {len(ECHO_TIMES)}, "
        f"median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s"
    )


def _exchange(gateway: GatewayProcess, *messages: bytes) -> bytes:
    """Send ``messages`` on one new hostile connection; what came back."""
    stats["inputs"] += 1
    with hostile_connection(gateway.dicom_port) as sock:
        answer = b""
        for message in messages:
            send_quietly(sock, message)
            answer = read_some(sock, ANSWER_WAIT_S)
        return answer


def _associated(gateway: GatewayProcess, *messages: bytes) -> bytes:
    """Associate properly, then send ``messages``; what came back last. The hostile address
    may be at its connection limits while the gateway is still closing earlier examples'
    connections: the association is then tried again (for up to 30 s)."""
    stats["inputs"] += 1
    deadline = time.monotonic() + 30
    while True:
        with hostile_connection(gateway.dicom_port) as sock:
            send_quietly(sock, associate_rq())
            accepted = read_some(sock, 10.0)
            if accepted[:1] == b"\x02":  # A-ASSOCIATE-AC
                answer = b""
                for message in messages:
                    send_quietly(sock, message)
                    answer = read_some(sock, ANSWER_WAIT_S)
                return answer
        assert time.monotonic() < deadline, f"never associated: {accepted[:16]!r}"
        time.sleep(0.5)


# --- PDU headers and raw streams ----------------------------------------------------------


@FUZZ
@given(
    pdu_type=st.integers(0, 255),
    length=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    body=st.binary(max_size=512),
)
def test_pdu_headers(gateway: GatewayProcess, pdu_type: int, length: int, body: bytes) -> None:
    _exchange(gateway, struct.pack(">BBL", pdu_type, 0, length) + body)
    gateway.echo_in_time()


@FUZZ
@given(stream=st.binary(min_size=1, max_size=4096))
def test_random_bytes(gateway: GatewayProcess, stream: bytes) -> None:
    _exchange(gateway, stream)
    gateway.echo_in_time()


# --- A-ASSOCIATE-RQ: item lengths, presentation contexts ---------------------------------


@FUZZ
@given(data=st.data())
def test_associate_request_items(gateway: GatewayProcess, data: st.DataObject) -> None:
    """A valid A-ASSOCIATE-RQ with bytes changed, item lengths rewritten, items inserted or
    the PDU cut short."""
    request = bytearray(associate_rq())
    kind = data.draw(st.sampled_from(["flip", "length", "insert", "truncate"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(6, len(request) - 1))
            request[position] = data.draw(st.integers(0, 255))
    elif kind == "length":
        # rewrite the 2-byte length of one of the items (they start after the fixed 74 bytes)
        position = data.draw(st.integers(74, len(request) - 4))
        request[position + 2 : position + 4] = struct.pack(">H", data.draw(st.integers(0, 65535)))
    elif kind == "insert":
        position = data.draw(st.integers(74, len(request)))
        inserted = item(data.draw(st.integers(0, 255)), data.draw(st.binary(max_size=300)))
        request[position:position] = inserted
        request[2:6] = struct.pack(">L", len(request) - 6)
    else:
        request = request[: data.draw(st.integers(1, len(request) - 1))]
    _exchange(gateway, bytes(request))
    gateway.echo_in_time()


@FUZZ
@given(
    contexts=st.lists(
        st.tuples(
            st.integers(0, 255),
            st.one_of(
                st.sampled_from(["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.1", ""]),
                st.text(max_size=80),
            ),
            st.lists(st.one_of(st.sampled_from(["1.2.840.10008.1.2", ""]), st.text(max_size=70))),
        ),
        max_size=140,
    )
)
def test_presentation_contexts(
    gateway: GatewayProcess, contexts: list[tuple[int, str, list[str]]]
) -> None:
    """Any number of presentation contexts (none, 140, duplicate or even ids, odd UIDs)."""
    items = [
        presentation_context(cid, abstract[:200], [s[:200] for s in syntaxes])
        for cid, abstract, syntaxes in contexts
    ]
    _exchange(gateway, associate_rq(items))
    gateway.echo_in_time()


# --- P-DATA after a proper association: PDV items, command sets, data sets ----------------


def _uid(serial: int, kind: int) -> str:
    """A fixed-length UID (hypothesis needs inputs of the same shape for the same draws)."""
    return f"1.2.826.0.1.3680043.10.1017.{kind}.{serial:012d}"


def _dataset_bytes(nesting: int, serial: int) -> bytes:
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = _uid(serial, 3)
    dataset.StudyInstanceUID = _uid(serial, 1)
    dataset.SeriesInstanceUID = _uid(serial, 2)
    dataset.PatientName = "Fuzz^Input"
    inner = dataset
    for _ in range(nesting):  # nested sequences
        child = Dataset()
        child.CodeValue = "1"
        inner.ContentSequence = Sequence([child])
        inner = child
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, dataset)
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_pdata_and_datasets(gateway: GatewayProcess, data: st.DataObject) -> None:
    """After a proper association: PDV items with wrong lengths or context ids, command sets
    with bytes changed, and data sets with changed lengths and VRs, deep nesting, deflated
    garbage or a deflate bomb."""
    serial = data.draw(st.integers(0, 10**12 - 1))
    command = bytearray(c_store_command(_uid(serial, 3)))
    dataset = bytearray(_dataset_bytes(data.draw(st.integers(0, 60)), serial))
    context = 1
    kind = data.draw(st.sampled_from(["pdv", "command", "dataset", "deflate", "bomb"]))
    if kind == "command":
        for _ in range(data.draw(st.integers(1, 6))):
            command[data.draw(st.integers(0, len(command) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "dataset":
        for _ in range(data.draw(st.integers(1, 6))):
            dataset[data.draw(st.integers(0, len(dataset) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "deflate":
        context = 3
        dataset = bytearray(data.draw(st.binary(max_size=2048)))
    elif kind == "bomb":
        context = 3
        dataset = bytearray(_bomb_tail())
    messages = [pdv(context, 0x03, bytes(command)), pdv(context, 0x02, bytes(dataset))]
    if kind == "pdv":
        raw = bytearray(b"".join(messages))
        position = data.draw(st.integers(0, len(raw) - 6))
        raw[position : position + 6] = data.draw(st.binary(min_size=6, max_size=6))
        body = bytes(raw)
    else:
        body = b"".join(messages)
    _associated(gateway, pdu(0x04, body))
    gateway.echo_in_time()


# --- gRPC: malformed IngestService messages ------------------------------------------------


@pytest.fixture(scope="module")
def ingest_channel(gateway: GatewayProcess, infra_env: dict[str, str]) -> Iterator[grpc.Channel]:
    token = Hydra(infra_env).metadata("fuzz", [Role.INGEST])
    channel = sync_channel(f"127.0.0.1:{gateway.grpc_port}")
    channel.token = token  # type: ignore[attr-defined]
    yield channel
    channel.close()


@FUZZ
@given(messages=st.lists(st.binary(max_size=2048), min_size=1, max_size=8))
def test_malformed_grpc_messages(
    gateway: GatewayProcess, ingest_channel: grpc.Channel, messages: list[bytes]
) -> None:
    """Raw bytes as IngestService.Store stream messages and as an Echo request: every call
    ends with a status (INVALID_ARGUMENT, INTERNAL, ...), and the server keeps answering."""
    stats["inputs"] += 1
    store = ingest_channel.stream_unary(
        "/pacs.ingest.v1.IngestService/Store",
        request_serializer=None,
        response_deserializer=ingest_pb.StoreResponse.FromString,
    )
    echo = ingest_channel.unary_unary(
        "/pacs.ingest.v1.IngestService/Echo",
        request_serializer=None,
        response_deserializer=ingest_pb.EchoResponse.FromString,
    )
    metadata = ingest_channel.token  # type: ignore[attr-defined]
    try:
        store(iter(messages), metadata=metadata, timeout=15)
    except grpc.RpcError as exc:
        assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, exc
    try:
        echo(messages[0], metadata=metadata, timeout=15)
    except grpc.RpcError as exc:
        assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, exc
    gateway.echo_in_time()
