"""Entry point: ``python -m pacs_audit`` / ``pacs-audit``."""

from __future__ import annotations

import asyncio

from pacs_audit.app import serve


def main() -> None:
    """Run the audit service until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
