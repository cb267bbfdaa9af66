"""Entry point: ``python -m pacs_indexer`` / ``pacs-indexer`` serves; ``pacs-indexer migrate``
brings the index schema to this release's revision and exits (the chart's pre-install and
pre-upgrade hook Job runs it; see :mod:`pacs_indexer.migrate`)."""

from __future__ import annotations

import asyncio
import sys

from pacs_indexer.app import serve
from pacs_indexer.migrate import main as migrate


def main() -> None:
    """Run the indexer until SIGTERM, or run a subcommand."""
    if sys.argv[1:2] == ["migrate"]:
        raise SystemExit(migrate(sys.argv[2:]))
    asyncio.run(serve())


if __name__ == "__main__":
    main()
