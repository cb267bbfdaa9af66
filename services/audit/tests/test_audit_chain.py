"""The hash chain: append is idempotent; Verify names the first changed, removed or reordered
record, and a chain rewritten with recomputed hashes fails at its signed checkpoint."""

from __future__ import annotations

from audit_helpers import sample_event
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pacs_audit.checkpoints import Checkpointer
from pacs_audit.trail import GENESIS, Trail, chain_hash, records
from pacs_audit.verify import verify
from sqlalchemy import delete, select, update


def _fill(trail: Trail, count: int) -> None:
    trail.append([sample_event(patient=f"PAT-{i}") for i in range(count)])


def test_an_untouched_chain_is_intact(trail: Trail, signing_key: Ed25519PrivateKey) -> None:
    _fill(trail, 12)
    verdict = verify(trail, signing_key.public_key())
    assert verdict.intact
    assert verdict.records_checked == 12


def test_a_redelivered_event_is_stored_once(trail: Trail) -> None:
    event = sample_event()
    assert trail.append([event]) == 1
    assert trail.append([event, event]) == 0
    assert trail.head()[0] == 1


def test_a_changed_payload_is_named(trail: Trail, signing_key: Ed25519PrivateKey) -> None:
    _fill(trail, 10)
    with trail.connection() as conn:
        payload = conn.execute(select(records.c.payload).where(records.c.seq == 4)).scalar_one()
        forged = payload.replace(b"PAT-3", b"PAT-X")
        conn.execute(update(records).where(records.c.seq == 4).values(payload=forged))
    verdict = verify(trail, signing_key.public_key())
    assert not verdict.intact
    assert verdict.first_bad_sequence == 4
    assert verdict.problem.startswith("changed")


def test_a_changed_column_is_named(trail: Trail, signing_key: Ed25519PrivateKey) -> None:
    _fill(trail, 10)
    with trail.connection() as conn:
        conn.execute(update(records).where(records.c.seq == 7).values(patient_id="SOMEONE"))
    verdict = verify(trail, signing_key.public_key())
    assert (verdict.intact, verdict.first_bad_sequence) == (False, 7)
    assert "columns" in verdict.problem


def test_a_deleted_record_is_named(trail: Trail, signing_key: Ed25519PrivateKey) -> None:
    _fill(trail, 10)
    with trail.connection() as conn:
        conn.execute(delete(records).where(records.c.seq == 6))
    verdict = verify(trail, signing_key.public_key())
    assert (verdict.intact, verdict.first_bad_sequence) == (False, 6)
    assert verdict.problem.startswith("removed")


def test_a_deleted_and_renumbered_record_is_named(
    trail: Trail, signing_key: Ed25519PrivateKey
) -> None:
    _fill(trail, 6)
    with trail.connection() as conn:
        conn.execute(delete(records).where(records.c.seq == 3))
        for seq in (4, 5, 6):
            conn.execute(update(records).where(records.c.seq == seq).values(seq=seq - 1))
    verdict = verify(trail, signing_key.public_key())
    assert (verdict.intact, verdict.first_bad_sequence) == (False, 3)
    assert verdict.problem.startswith("removed")


def test_swapped_records_are_named_reordered(trail: Trail, signing_key: Ed25519PrivateKey) -> None:
    _fill(trail, 8)
    with trail.connection() as conn:
        conn.execute(update(records).where(records.c.seq == 5).values(seq=-5))
        conn.execute(update(records).where(records.c.seq == 6).values(seq=5))
        conn.execute(update(records).where(records.c.seq == -5).values(seq=6))
    verdict = verify(trail, signing_key.public_key())
    assert (verdict.intact, verdict.first_bad_sequence) == (False, 5)
    assert verdict.problem.startswith("reordered")


def test_a_rewritten_chain_fails_at_its_signed_checkpoint(
    trail: Trail, checkpointer: Checkpointer, signing_key: Ed25519PrivateKey
) -> None:
    _fill(trail, 5)
    assert checkpointer.maybe_sign()
    _fill(trail, 3)
    # Rewrite record 2 and recompute every later hash: the chain itself is consistent again.
    with trail.connection() as conn:
        rows = conn.execute(select(records).order_by(records.c.seq)).all()
        prev = GENESIS
        for row in rows:
            payload = bytes(row.payload)
            if row.seq == 2:
                payload = payload.replace(b"PAT-1", b"PAT-Z")
            digest = chain_hash(prev, payload)
            conn.execute(
                update(records)
                .where(records.c.seq == row.seq)
                .values(
                    payload=payload,
                    prev_hash=prev,
                    hash=digest,
                    patient_id="PAT-Z" if row.seq == 2 else row.patient_id,
                )
            )
            prev = digest
    verdict = verify(trail, signing_key.public_key())
    assert not verdict.intact
    assert verdict.first_bad_sequence == 5
    assert "checkpoint" in verdict.problem


def test_a_truncated_chain_fails_at_its_checkpoint(
    trail: Trail, checkpointer: Checkpointer, signing_key: Ed25519PrivateKey
) -> None:
    _fill(trail, 5)
    assert checkpointer.maybe_sign()
    with trail.connection() as conn:
        conn.execute(delete(records).where(records.c.seq >= 4))
    verdict = verify(trail, signing_key.public_key())
    assert (verdict.intact, verdict.first_bad_sequence) == (False, 4)


def test_another_key_does_not_verify_the_checkpoints(
    trail: Trail, checkpointer: Checkpointer
) -> None:
    _fill(trail, 5)
    assert checkpointer.maybe_sign()
    verdict = verify(trail, Ed25519PrivateKey.generate().public_key())
    assert not verdict.intact
    assert "signature" in verdict.problem
