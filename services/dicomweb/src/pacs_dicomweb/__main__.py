"""Entry point: ``python -m pacs_dicomweb`` / ``pacs-dicomweb``."""

from __future__ import annotations

import asyncio

from pacs_dicomweb.app import serve


def main() -> None:
    """Run the DICOMweb service until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
