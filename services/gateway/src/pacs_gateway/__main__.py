"""Entry point: ``python -m pacs_gateway`` (or the ``pacs-gateway`` script)."""

from __future__ import annotations

import asyncio

from pacs_gateway.app import serve


def main() -> None:
    """Run the gateway until SIGTERM."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
