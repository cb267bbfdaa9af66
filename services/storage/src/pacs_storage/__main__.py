"""Entry point: ``python -m pacs_storage`` / ``pacs-storage``."""

from __future__ import annotations

import asyncio

from pacs_storage.app import serve


def main() -> None:
    """Run the storage service until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
