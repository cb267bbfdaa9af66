"""cloudpacs audit service: the append-only, hash-chained audit trail (PS3.15 A.5)."""
