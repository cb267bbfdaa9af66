"""Entry point: ``python -m pacs_transcoder`` / ``pacs-transcoder``."""

from __future__ import annotations

import asyncio

from pacs_transcoder.app import serve


def main() -> None:
    """Run the transcoder until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
