"""Gateway settings that cannot work are refused when read, naming the key."""

from __future__ import annotations

import pytest
from pacs_gateway.settings import GatewaySettings
from pydantic import ValidationError


@pytest.mark.parametrize("tenant", ["Default", "a/b", ""])
def test_default_tenant_follows_the_tenant_rule(tenant: str) -> None:
    with pytest.raises(ValidationError, match="default_tenant"):
        GatewaySettings(default_tenant=tenant)
