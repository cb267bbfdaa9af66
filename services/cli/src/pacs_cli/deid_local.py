"""The local stack's de-identification project (``pacs up``): tenant ``default`` into tenant
``research``, with a project key and a map key made once and kept in the run folder (mode
0600), so pseudonyms stay the same from one ``pacs up`` to the next."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

from pacs_cli.deid_commands import LOCAL_PROJECT


def _secret(path: Path, make: str) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make)
    return path.read_text().strip()


def local_deid_env(run_dir: Path) -> dict[str, str]:
    """Environment of the local deid service: its project, keys and map database."""
    key = _secret(run_dir / "deid-project.key", secrets.token_urlsafe(32))
    reid_key = _secret(run_dir / "deid-map.key", Fernet.generate_key().decode())
    project = {
        "source_tenants": ["default"],
        "target_tenant": "research",
        "key": key,
        "reidentification_map": True,
    }
    return {
        "PACS_DEID_PROJECTS": json.dumps({LOCAL_PROJECT: project}),
        "PACS_DEID_REID_KEY": reid_key,
        "PACS_DEID_DATABASE_URL": f"sqlite:///{run_dir / 'deid.sqlite'}",
    }
