"""Entry point: ``python -m pacs_deid`` / ``pacs-deid``."""

from __future__ import annotations

import asyncio

from pacs_deid.app import serve


def main() -> None:
    """Run the de-identification service until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
