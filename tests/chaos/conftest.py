"""The stack of the rolling-restart and soak tests (one for both, to keep CI short): the e2e
stack with two gateway workers sharing the DICOM port (the deployment's shape)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.e2e_support import RunningStack, running_stack


@pytest.fixture(scope="session")
def e2e_stack_workers(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    with running_stack(
        infra_env, tmp_path_factory.mktemp("rolling"), {"PACS_GATEWAY_WORKERS": "2"}
    ) as stack:
        yield stack
