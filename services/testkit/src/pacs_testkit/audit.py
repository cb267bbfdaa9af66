"""A real audit service for tests: its own SQLite trail and signing key, consuming a topic of
the test's own (so it sees only what the test emits), and the emitter settings that send there."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pacs_audit.app import AuditApp, create_app
from pacs_audit.settings import AuditServiceSettings
from pacs_common.audit_events import AuditSettings


def audit_topic() -> str:
    """A fresh audit topic name (Kafka creates it on first use)."""
    return f"pacs.audit.test-{uuid.uuid4().hex[:12]}.v1"


def emitter_settings(topic: str) -> AuditSettings:
    """Emitter settings of a service under test: auditing on, into ``topic``."""
    return AuditSettings(enabled=True, topic=topic)


async def start_audit(directory: Path, topic: str, **settings: Any) -> AuditApp:
    """Start an audit service consuming ``topic`` into ``directory``/audit.sqlite, signing
    with a key created in ``directory``; ``settings`` override further fields."""
    values: dict[str, Any] = {
        "grpc_port": 0,
        "database_url": f"sqlite:///{directory / 'audit.sqlite'}",
        "signing_key_file": directory / "signing.pem",
        "topic": topic,
        "consumer_group": f"test-audit-{uuid.uuid4().hex[:12]}",
        "shutdown_grace_s": 2,
        "audit": emitter_settings(topic),
    }
    values.update(settings)
    app = create_app(AuditServiceSettings(**values))
    await app.start()
    return app
