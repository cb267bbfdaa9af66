"""Entry point: ``python -m pacs_hl7`` / ``pacs-hl7``."""

from __future__ import annotations

import asyncio

from pacs_hl7.app import serve


def main() -> None:
    """Run the hl7 service until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
