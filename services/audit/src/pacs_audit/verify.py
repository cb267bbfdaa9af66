"""Walk the chain and name the first record that was changed, removed or reordered.

For each record in sequence order (read in pages, so a long trail needs little memory):

- its sequence number must follow the previous one: a gap means the records in it were
  **removed**;
- its hash must be ``SHA-256(its previous hash || its payload)``, and its searchable columns
  must say what its payload says: otherwise it was **changed**;
- its previous hash must be the hash of the record before it: a self-consistent record that
  links elsewhere was **reordered** (its previous hash is another record's) or the record
  before it was **removed** and the sequence renumbered;
- every signed checkpoint must verify with the configured key and match the record it names:
  a chain rewritten with recomputed hashes fails there (**changed**); a chain shorter than its
  newest checkpoint lost records at its end (**removed**).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError
from pacs.events.v1 import audit_events_pb2 as audit_pb
from sqlalchemy import select

from pacs_audit.checkpoints import signature_valid
from pacs_audit.trail import GENESIS, Trail, chain_hash, checkpoints, columns_of, records

PAGE = 5000
LINKS_ELSEWHERE = "links elsewhere"
Bad = tuple[int, str]
"""The sequence number of the first bad record and what is wrong with it."""


@dataclass(frozen=True)
class Verdict:
    """The result of a walk."""

    intact: bool
    records_checked: int
    checkpoints_checked: int
    first_bad_sequence: int = 0
    problem: str = ""


def _columns_match(row: Any, event: audit_pb.AuditEvent) -> bool:
    expected = columns_of(event)
    return all(getattr(row, name) == value for name, value in expected.items())


def _check_row(row: Any, prev_seq: int, prev_hash: bytes, marks: dict[int, Any]) -> Bad | None:
    """What is wrong with one record, given the one before it; None when nothing."""
    seq = int(row.seq)
    payload, stored_prev, digest = bytes(row.payload), bytes(row.prev_hash), bytes(row.hash)
    try:
        event: audit_pb.AuditEvent | None = audit_pb.AuditEvent.FromString(payload)
    except DecodeError:
        event = None
    if seq != prev_seq + 1:
        return prev_seq + 1, f"removed: records {prev_seq + 1}..{seq - 1} are missing"
    if event is None or chain_hash(stored_prev, payload) != digest:
        return seq, "changed: its content does not match its hash"
    if not _columns_match(row, event):
        return seq, "changed: its columns differ from its hashed content"
    if stored_prev != prev_hash:
        return seq, LINKS_ELSEWHERE
    if seq in marks and bytes(marks[seq].hash) != digest:
        return seq, "changed: the chain was rewritten (it differs from a signed checkpoint)"
    return None


def _walk(trail: Trail, marks: dict[int, Any]) -> tuple[int, int, Bad | None]:
    """(records checked, last good sequence, first problem) of the chain, page by page."""
    prev_seq, prev_hash, checked, after = 0, GENESIS, 0, 0
    while True:
        with trail.connection() as conn:
            page = conn.execute(
                select(records).where(records.c.seq > after).order_by(records.c.seq).limit(PAGE)
            ).all()
        if not page:
            return checked, prev_seq, None
        for row in page:
            bad = _check_row(row, prev_seq, prev_hash, marks)
            if bad is not None:
                return checked, prev_seq, bad
            prev_seq, prev_hash = int(row.seq), bytes(row.hash)
            checked += 1
        after = prev_seq


def _explain_link(trail: Trail, seq: int) -> str:
    """A record whose previous hash is not its predecessor's: reordered when that hash is some
    other record's, else the record it followed was removed and the rest renumbered."""
    with trail.connection() as conn:
        prev = conn.execute(select(records.c.prev_hash).where(records.c.seq == seq)).scalar_one()
        linked = conn.execute(select(records.c.seq).where(records.c.hash == prev)).first()
    if linked is not None:
        return f"reordered: it follows record {int(linked.seq)} in the chain"
    return "removed: the record it followed is gone (later records renumbered)"


def verify(trail: Trail, public: Ed25519PublicKey) -> Verdict:
    """Check the whole chain and its checkpoints (see the module docstring)."""
    with trail.connection() as conn:
        signed = conn.execute(select(checkpoints).order_by(checkpoints.c.seq)).all()
    checked, last_good, bad = _walk(trail, {int(c.seq): c for c in signed})
    if bad is not None and bad[1] == LINKS_ELSEWHERE:
        bad = (bad[0], _explain_link(trail, bad[0]))
    for mark in signed:
        seq = int(mark.seq)
        if not signature_valid(
            public, seq, bytes(mark.hash), mark.signed_time, bytes(mark.signature)
        ) and (bad is None or seq < bad[0]):
            bad = (seq, "changed: the checkpoint signed at this record has an invalid signature")
    if bad is None and signed and int(signed[-1].seq) > last_good:
        bad = (last_good + 1, f"removed: the chain ends before checkpoint {int(signed[-1].seq)}")
    if bad is not None:
        return Verdict(False, checked, len(signed), bad[0], bad[1])
    return Verdict(True, checked, len(signed))
