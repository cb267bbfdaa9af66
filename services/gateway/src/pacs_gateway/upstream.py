"""Errors of the services the gateway calls, turned into the project's error hierarchy.

The translation itself is the one in :mod:`pacs_common.clients.errors`, shared by every client;
the DIMSE and IngestService sides import it from here.
"""

from __future__ import annotations

from pacs_common.clients.errors import from_exception, from_rpc_error

__all__ = ["from_exception", "from_rpc_error"]
