"""The image tests are opt-in: ``make image-test`` (or naming ``tests/image`` to pytest).

Building the three images from nothing takes about five minutes on two cores (debootstrap,
then one ``uv sync`` per service; docs/container-image.md), so ``make test`` leaves this folder
out rather than reporting a skip: the suite stays as it was, and the images have their own
target (``make image-test``, which builds them first) and their own CI step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _named(config: pytest.Config) -> bool:
    """True when the command line names this folder or something in it."""
    for arg in config.args:
        target = Path(arg.split("::", 1)[0]).resolve()
        if target == HERE or HERE in target.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the folder out of a run that does not name it (``make test``)."""
    if collection_path.name == "conftest.py" or _named(config):
        return None
    return True
