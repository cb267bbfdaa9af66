"""Signed checkpoints: every so often the chain's head is signed with Ed25519.

The hash chain alone shows that a record was changed, removed or reordered, unless the one
who changed it also recomputed every later hash (anyone with write access to the database
can). A checkpoint is a signature over ``(sequence, hash, time)`` of the head at that moment,
made with a key the database does not hold (a secret setting of the service), so rewriting the
chain before a checkpoint needs the signing key too; :mod:`pacs_audit.verify` checks each
checkpoint against the configured key's public half.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select

from pacs_audit.trail import Trail, checkpoints, now_rfc3339

log = logging.getLogger(__name__)


def load_key(pem: str | None, path: Path | None) -> Ed25519PrivateKey:
    """The signing key: PEM text (a secret setting), else a PEM file; a missing file is
    created with a new key (the embedded default: ``make up`` keeps it under ``.cache``).

    Raises:
        SystemExit: the key is not an Ed25519 private key in PEM (PKCS#8).
    """
    if pem is None and path is not None:
        if not path.is_file():
            key = Ed25519PrivateKey.generate()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                path.chmod(0o600)
            except OSError as exc:
                raise SystemExit(
                    f"no audit signing key: set PACS_AUDIT_SIGNING_KEY (an Ed25519 PEM, from a "
                    f"Secret) or make {path} writable ({exc.strerror})"
                ) from exc
            log.warning("created a new audit signing key", extra={"path": str(path)})
            return key
        pem = path.read_text()
    if pem is None:
        raise SystemExit("PACS_AUDIT_SIGNING_KEY or _SIGNING_KEY_FILE must be set")
    try:
        loaded = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError as exc:
        raise SystemExit(f"the audit signing key is not a PEM private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SystemExit("the audit signing key must be an Ed25519 key")
    return loaded


def key_id(public: Ed25519PublicKey) -> str:
    """SHA-256 (hex, 16 characters) of the raw public key: which key signed a checkpoint."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_text(seq: int, digest: bytes, signed_time: str) -> bytes:
    """What a checkpoint signature covers."""
    return f"cloudpacs-audit-checkpoint:{seq}:{digest.hex()}:{signed_time}".encode()


class Checkpointer:
    """Signs the head of the chain when it moved ``every`` records past the last checkpoint."""

    def __init__(self, trail: Trail, key: Ed25519PrivateKey, every: int) -> None:
        self.trail = trail
        self.key = key
        self.every = max(1, every)
        self.key_id = key_id(key.public_key())

    def last_signed_seq(self) -> int:
        """The sequence number of the newest checkpoint (0 when none)."""
        with self.trail.connection() as conn:
            row = conn.execute(
                select(checkpoints.c.seq).order_by(checkpoints.c.id.desc()).limit(1)
            ).first()
        return int(row.seq) if row else 0

    def maybe_sign(self, *, force: bool = False) -> bool:
        """Sign the head if it moved far enough (or at all, with ``force``); True if signed."""
        seq, digest = self.trail.head()
        last = self.last_signed_seq()
        if seq in {0, last} or (not force and seq - last < self.every):
            return False
        signed_time = now_rfc3339()
        signature = self.key.sign(signed_text(seq, digest, signed_time))
        with self.trail.connection() as conn:
            conn.execute(
                insert(checkpoints).values(
                    seq=seq,
                    hash=digest,
                    signed_time=signed_time,
                    key_id=self.key_id,
                    signature=signature,
                )
            )
        return True


def signature_valid(
    public: Ed25519PublicKey, seq: int, digest: bytes, signed_time: str, signature: bytes
) -> bool:
    """True if ``signature`` is the key's signature of that checkpoint."""
    try:
        public.verify(signature, signed_text(seq, digest, signed_time))
    except InvalidSignature:
        return False
    return True
