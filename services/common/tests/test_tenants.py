"""The tenant name rule shared by storage (object keys) and the gateway (site registry)."""

from __future__ import annotations

import pytest
from pacs_common.errors import InvalidArgumentError
from pacs_common.tenants import check_tenant


@pytest.mark.parametrize("name", ["a", "hospital-a", "clinic-2", "x" * 63, "0"])
def test_valid_tenant_names_pass(name: str) -> None:
    check_tenant(name)


@pytest.mark.parametrize(
    "name", ["", "Hospital", "a/b", "..", "-a", "a-", "a_b", "a.b", "x" * 64, "é"]
)
def test_invalid_tenant_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_tenant(name)
