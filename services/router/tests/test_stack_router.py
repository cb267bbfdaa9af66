"""``pacs up`` starts the router only once the stack's run folder has a rules file."""

from __future__ import annotations

from pathlib import Path

from pacs_cli.stack import StackConfig


def test_pacs_up_starts_the_router_only_with_a_rules_file(tmp_path: Path) -> None:
    config = StackConfig(run_dir=tmp_path)
    assert "router" not in [spec.name for spec in config.services()]
    (tmp_path / "routes.yaml").write_text("destinations: {}\n")
    router = next(spec for spec in config.services() if spec.name == "router")
    assert router.module == "pacs_router"
    assert router.grpc_port == 50059
    assert router.env["PACS_ROUTER_RULES_FILE"] == str(tmp_path / "routes.yaml")
    assert router.env["PACS_ROUTER_STORAGE_TARGET"] == f"127.0.0.1:{config.storage_port}"
