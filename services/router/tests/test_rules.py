"""The rules file and rule matching: what a valid file routes, and what an invalid one says."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pacs_common.local import infra_environment
from pacs_router.matching import matches, matching_rules
from pacs_router.rules import Match, RulesFileError, load_rules
from pydicom.dataset import Dataset, FileMetaDataset
from router_peers import dataset_of, sample

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _header(**attributes: object) -> Dataset:
    header = dataset_of(sample(**attributes))
    return header


def test_every_given_criterion_must_hold_and_lists_match_any_value() -> None:
    ct = _header(InstitutionName="Hospital A North", Modality="CT")
    assert matches(Match(modality=["MR", "CT"]), ct, NOON)
    assert not matches(Match(modality=["MR"]), ct, NOON)
    assert matches(Match(attributes={"InstitutionName": "Hospital A*"}), ct, NOON)
    assert matches(Match(attributes={"00080080": ["X", "Hospital ? North"]}), ct, NOON)
    assert not matches(
        Match(modality=["CT"], attributes={"InstitutionName": "Hospital B*"}), ct, NOON
    )
    assert matches(Match(sop_class_uid=["1.2.840.10008.5.1.4.1.1.2"]), ct, NOON)
    assert not matches(Match(sop_class_uid=["1.2.840.10008.5.1.4.1.1.4"]), ct, NOON)
    assert matches(Match(), ct, NOON)  # no criteria: everything


def test_wildcards_are_dicom_ones_not_regular_expressions() -> None:
    ct = _header(InstitutionName="A.B")
    assert matches(Match(attributes={"InstitutionName": "A.B"}), ct, NOON)
    assert not matches(Match(attributes={"InstitutionName": "A.."}), ct, NOON)
    assert not matches(Match(attributes={"InstitutionName": "a.b"}), ct, NOON)  # case counts
    assert not matches(Match(attributes={"PerformingPhysicianName": "*"}), ct, NOON)  # absent


def test_calling_ae_is_the_source_ae_title_of_the_file_meta() -> None:
    ct = _header()
    ct.file_meta = FileMetaDataset(ct.file_meta)
    ct.file_meta.SourceApplicationEntityTitle = "CT_SCANNER_1"
    assert matches(Match(calling_ae=["CT_*"]), ct, NOON)
    assert not matches(Match(calling_ae=["MR_*"]), ct, NOON)
    del ct.file_meta.SourceApplicationEntityTitle
    assert not matches(Match(calling_ae=["CT_*"]), ct, NOON)  # unknown sender: no match


def test_calling_ae_recorded_by_storage_comes_before_the_file_meta() -> None:
    """The gateway has storage record the calling AE with the object (its file meta has none);
    (0002,0017) Sending AE Title is used when storage recorded none."""
    ct = _header()
    ct.file_meta = FileMetaDataset(ct.file_meta)
    ct.file_meta.SourceApplicationEntityTitle = "ARCHIVE"
    assert matches(Match(calling_ae=["CT_*"]), ct, NOON, "CT_SCANNER_1")
    assert not matches(Match(calling_ae=["ARCHIVE"]), ct, NOON, "CT_SCANNER_1")
    ct.file_meta.add_new(0x00020017, "AE", "MR_SCANNER_2")
    assert matches(Match(calling_ae=["MR_*"]), ct, NOON)


def test_time_of_day_windows_in_their_time_zone_and_across_midnight() -> None:
    ct = _header()
    office = {"start": "08:00", "end": "18:00", "timezone": "Europe/Paris"}
    night = {"start": "18:00", "end": "07:00", "timezone": "Europe/Paris"}
    assert matches(Match.model_validate({"time_of_day": office}), ct, NOON)  # 13:00 in Paris
    assert not matches(Match.model_validate({"time_of_day": night}), ct, NOON)
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 00:30 in Paris
    assert matches(Match.model_validate({"time_of_day": night}), ct, late)
    assert not matches(Match.model_validate({"time_of_day": office}), ct, late)


def test_a_valid_file_loads_in_yaml_and_json(tmp_path: Path) -> None:
    text = """
destinations:
  site-b: {kind: dimse, host: 127.0.0.1, port: 11112, ae_title: SITE_B}
  web: {kind: stow, url: "http://127.0.0.1:8042/dicom-web"}
tenants:
  hospital-a:
    - name: ct
      destinations: [site-b, web]
      match: {modality: [CT]}
"""
    (tmp_path / "routes.yaml").write_text(text)
    rules = load_rules(tmp_path / "routes.yaml")
    assert rules.destinations["site-b"].kind == "dimse"
    assert rules.destinations["web"].kind == "stow"
    matched = matching_rules(rules.tenants["hospital-a"], _header(Modality="CT"), NOON)
    assert [rule.name for rule in matched] == ["ct"]
    (tmp_path / "routes.json").write_text(rules.model_dump_json())
    assert load_rules(tmp_path / "routes.json") == rules


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("tenants: {a: [{name: r, destinations: [nowhere]}]}", "unknown destination(s) nowhere"),
        ("destinations: {b: {kind: dimse, host: h, port: 0, ae_title: B}}", "destinations.b"),
        ("destinations: {b: {host: h, port: 104, ae_title: B}}", "kind"),
        ("destinations: {Site_B: {kind: stow, url: 'http://x'}}", "names a Kafka topic"),
        ("tenants: {a: [{name: r, destinations: []}]}", "tenants.a.0.destinations"),
        ("tenants: {a: [{name: r, destinations: [b], match: {modalty: [CT]}}]}", "modalty"),
        ("tenants: {a: [{name: r, match: {attributes: {NoSuchKeyword: x}}}]}", "NoSuchKeyword"),
        ("tenants: {a: [{name: r, match: {time_of_day: {start: '25:00', end: '01:00'}}}]}", ""),
        ("destinations: [", "is not valid"),
        ("tenants: {a: [{name: r, match: {time_of_day: {start: 18:00, end: '07:00'}}}]}", "HH:MM"),
    ],
)
def test_an_invalid_file_names_the_field(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(content)
    with pytest.raises(RulesFileError) as raised:
        load_rules(path)
    message = str(raised.value)
    assert str(path) in message
    assert says in message


def test_the_router_does_not_start_on_a_bad_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("tenants: {a: [{name: r, destinations: [site-x]}]}")
    result = subprocess.run(
        [sys.executable, "-m", "pacs_router"],
        env={**infra_environment(), "PACS_ROUTER_RULES_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"routing rules file {path} is invalid" in result.stderr
    assert "unknown destination(s) site-x" in result.stderr
    missing = tmp_path / "absent.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pacs_router"],
        env={**infra_environment(), "PACS_ROUTER_RULES_FILE": str(missing)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"routing rules file {missing}" in result.stderr
