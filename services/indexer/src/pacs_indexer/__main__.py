"""Entry point: ``python -m pacs_indexer`` / ``pacs-indexer``."""

from __future__ import annotations

import asyncio

from pacs_indexer.app import serve


def main() -> None:
    """Run the indexer until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
