"""An end-to-end stack: the real services as processes on free ports, over the real
infrastructure started by ``infra/up.sh``, driven with DCMTK and gRPC clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.e2e_support import RunningStack, running_stack


@pytest.fixture(scope="module")
def e2e_stack(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """Start storage, indexer and gateway as processes; stop them afterwards."""
    with running_stack(infra_env, tmp_path_factory.mktemp("stack")) as stack:
        yield stack
