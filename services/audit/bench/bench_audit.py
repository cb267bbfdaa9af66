"""Audit trail throughput, and what auditing costs the DICOM ingest.

1. **Store**: records/s appended to the hash chain (SQLite file, and the local PostgreSQL when
   it is reachable), in the batches the Kafka consumer hands over (200 events per transaction).
   Bounded by one transaction per batch (SQLite ``synchronous=FULL``: an fsync per batch) and
   by SHA-256 plus protobuf parsing per record.
2. **End to end**: records/s from :class:`pacs_common.audit_events.AuditEmitter` (the services'
   emitter) through Kafka (acks=all) into a running audit service, until the last is stored.
3. **Verify**: records/s walked by Verify (hash recomputed, payload parsed, columns compared).
4. **Ingest with auditing on vs off**: the gateway ingest bench's stack (real processes:
   storage, indexer, gateway, audit service), the same CT series sent with DCMTK ``storescu``
   over one association, ``PACS_AUDIT_EVENTS_ENABLED`` true vs false; CPU seconds per instance
   of the gateway, storage and indexer processes (the audit service itself is reported apart:
   it is a separate consumer, not the ingest path). The goal is at most 5 % more.

The peer named by the issue for the export (rsyslog) is exercised by the tests, not timed here.

    uv run python services/audit/bench/bench_audit.py [--records N] [--instances N]
        [--skip-ingest]   (needs infra/up.sh; the ingest part needs DCMTK)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_audit.trail import Trail
from pacs_audit.verify import verify
from pacs_common import audit_events
from pacs_common.events import now_rfc3339
from pacs_common.local import load_infra_env
from pacs_common.settings import KafkaSettings
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "services" / "gateway" / "bench"))
console = Console()
BATCH = 200


def sample(number: int) -> audit_pb.AuditEvent:
    """A C-STORE-like event (two actors, patient, study, SOP class)."""
    return audit_pb.AuditEvent(
        id=str(uuid.uuid4()),
        event_type=audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED,
        action="C",
        event_time=now_rfc3339(),
        tenant="bench",
        patient_id=f"PAT-{number % 1000}",
        study_instance_uids=[f"1.2.826.0.1.3680043.8.498.{number % 5000}"],
        sop_classes=[
            audit_pb.SopClassCount(sop_class_uid="1.2.840.10008.5.1.4.1.1.2", number_of_instances=1)
        ],
        actors=[
            audit_events.dicom_actor("MODALITY", "10.0.0.7", role_code=audit_events.SOURCE_ROLE),
            audit_events.service_actor("CLOUDPACS", role_code=audit_events.DESTINATION_ROLE),
        ],
        source="gateway",
    )


def bench_store(url: str, records: int) -> tuple[float, float]:
    """(records/s appended, records/s verified) on the database at ``url``."""
    trail = Trail(url)
    trail.create_schema()
    events = [sample(i) for i in range(records)]
    started = time.perf_counter()
    for start in range(0, records, BATCH):
        trail.append(events[start : start + BATCH])
    stored = records / (time.perf_counter() - started)
    key = Ed25519PrivateKey.generate()
    started = time.perf_counter()
    verdict = verify(trail, key.public_key())
    verified = verdict.records_checked / (time.perf_counter() - started)
    assert verdict.intact and verdict.records_checked == records, verdict
    trail.dispose()
    return stored, verified


async def bench_end_to_end(records: int, directory: Path) -> float:
    """Records/s from the emitter through Kafka into a running audit service."""
    from pacs_testkit.audit import audit_topic, emitter_settings, start_audit  # noqa: PLC0415

    topic = audit_topic()
    app = await start_audit(directory, topic)
    emitter = audit_events.AuditEmitter(KafkaSettings(), "bench", emitter_settings(topic))
    await emitter.start()
    try:
        # The service's own Application Start record shows that its consumer took the topic.
        while app.trail.head()[0] < 1:  # noqa: ASYNC110  (polls a database)
            await asyncio.sleep(0.05)
        baseline = app.trail.head()[0]
        started = time.perf_counter()
        for number in range(records):
            emitter.emit(sample(number))
        await emitter.flush()
        while app.trail.head()[0] < baseline + records:  # noqa: ASYNC110  (polls a database)
            await asyncio.sleep(0.05)
        return records / (time.perf_counter() - started)
    finally:
        await emitter.stop()
        await app.stop()


class _Caller:
    tenant, calling_ae_title, address, user = "bench", "MODALITY", "10.0.0.7", None


async def bench_hook(count: int, part10: bytes) -> float:
    """CPU seconds per C-STORE that auditing adds to the gateway process: building the event
    (Patient ID read from the Part 10 bytes), queueing it, and this process's share of
    publishing it (aiokafka, batched), measured with ``time.process_time`` in one process."""
    from pacs_testkit.audit import audit_topic, emitter_settings  # noqa: PLC0415

    emitter = audit_events.AuditEmitter(KafkaSettings(), "bench", emitter_settings(audit_topic()))
    await emitter.start()
    try:
        emitter.emit(audit_events.application_activity("bench", started=True))
        await emitter.flush()  # connected, topic created
        started = time.process_time()
        for sent in range(count):
            event = audit_events.dicom_instances_stored(
                _Caller(),
                "CLOUDPACS",
                study_instance_uid="1.2.3",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                part10=part10,
                ok=True,
            )
            assert event is not None
            emitter.emit(event)
            if sent % 50 == 0:
                await asyncio.sleep(0)  # let the drain task run as it would beside C-STOREs
        await emitter.flush()
        return (time.process_time() - started) / count
    finally:
        await emitter.stop()


def bench_ingest(instances: int) -> dict[bool, dict[str, float]]:
    """CPU seconds per instance by process, auditing off and on (one association each)."""
    import bench_ingest as ingest  # noqa: PLC0415  (the gateway's bench, on sys.path above)

    files = ingest.generate(instances)
    results: dict[bool, dict[str, float]] = {}
    for enabled in (False, True, False, True):  # interleaved: the machine's load drifts
        target = ingest.CloudpacsTarget(1)
        target.stack.config.env["PACS_AUDIT_EVENTS_ENABLED"] = str(enabled).lower()
        client = ingest.s3_client()
        try:
            with target:
                meter = target.cpu_meter()
                audit_pid = target.stack.process("audit").pid()
                if audit_pid is not None:
                    meter.roots["audit"] = audit_pid
                _, cpu = ingest.send(files, target.dicom_port, "CLOUDPACS", 1, meter)
                target.verify(client, len(files))
        finally:
            ingest.drop_bucket(client, target.bucket)
        per_instance = {name: seconds / instances for name, seconds in cpu.items()}
        best = results.get(enabled)
        path = ("gateway", "storage", "indexer")
        if best is None or sum(per_instance.get(n, 0) for n in path) < sum(
            best.get(n, 0) for n in path
        ):
            results[enabled] = per_instance
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records stored and verified")
    parser.add_argument("--instances", type=int, default=100, help="CT slices for the ingest")
    parser.add_argument("--skip-ingest", action="store_true", help="only the trail benches")
    args = parser.parse_args()
    for key, value in load_infra_env().items():
        os.environ.setdefault(key, value)
    table = Table("database", "stored records/s", "verified records/s", "bounded by")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as folder:
        stored, verified = bench_store(f"sqlite:///{folder}/trail.sqlite", args.records)
        table.add_row("SQLite", f"{stored:,.0f}", f"{verified:,.0f}", "fsync per batch; SHA-256")
        try:
            from pacs_testkit.postgres import DEFAULT_URL, scratch_database  # noqa: PLC0415

            with scratch_database(os.environ.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)) as url:
                stored, verified = bench_store(url, args.records)
            table.add_row("PostgreSQL", f"{stored:,.0f}", f"{verified:,.0f}", "round trips")
        except Exception as exc:
            console.print(f"[yellow]PostgreSQL skipped: {exc}[/yellow]")
        e2e = asyncio.run(bench_end_to_end(args.records, Path(folder) / "e2e"))
    console.print(table)
    console.print(
        f"emitter -> Kafka (acks=all) -> audit service (SQLite): {e2e:,.0f} records/s "
        f"({args.records} records)"
    )
    import bench_ingest as ingest  # noqa: PLC0415  (the gateway's bench, on sys.path above)

    slice_bytes = ingest.generate(1)[0].read_bytes()
    hook_s = asyncio.run(bench_hook(args.records, slice_bytes))
    console.print(
        f"auditing in the gateway: {hook_s * 1e6:,.0f} µs CPU per C-STORE (event with the "
        f"Patient ID of a {len(slice_bytes) // 1024} KiB CT slice, queue, batched publish)"
    )
    if args.skip_ingest:
        return
    results = bench_ingest(args.instances)
    cpu = Table("process", "CPU ms/instance, audit off", "audit on", "difference")
    path_off = path_on = 0.0
    for name in ("gateway", "storage", "indexer", "audit", "Kafka"):
        off, on = results[False].get(name, 0.0) * 1000, results[True].get(name, 0.0) * 1000
        if name in ("gateway", "storage", "indexer"):
            path_off, path_on = path_off + off, path_on + on
        cpu.add_row(name, f"{off:.2f}", f"{on:.2f}", f"{on - off:+.2f}")
    change = 100 * (path_on - path_off) / path_off if path_off else 0.0
    cpu.add_row("ingest path", f"{path_off:.2f}", f"{path_on:.2f}", f"{change:+.1f} %")
    console.print(cpu)
    if path_off:
        console.print(
            f"the gateway hook's measured cost ({hook_s * 1e3:.2f} ms) is "
            f"{100 * hook_s * 1e3 / path_off:.1f} % of the ingest path's CPU per instance with "
            f"auditing off ({path_off:.2f} ms); the audit service and Kafka add their rows above"
        )
    console.print(
        f"{args.instances} instances, one association, best of two runs each; goal: ingest path "
        "at most +5 %. The machine is shared and loaded: treat differences of a few % as noise."
    )


if __name__ == "__main__":
    main()
