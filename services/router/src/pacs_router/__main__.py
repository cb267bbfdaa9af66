"""Entry point: ``python -m pacs_router`` / ``pacs-router``."""

from __future__ import annotations

import asyncio

from pacs_router.app import serve


def main() -> None:
    """Run the router until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
