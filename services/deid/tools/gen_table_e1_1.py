"""Generate ``pacs_deid/data/table_e1_1.json``: PS3.15 Table E.1-1 as data.

NEMA publishes Table E.1-1 only as HTML/DocBook on its web site; no registry package carries the
standard's own XML. Two PyPI packages carry the table in machine-readable form, read here as
*data* (parsed with ``ast``, nothing imported or copied as code):

* ``idiscore`` 1.6.0, ``idiscore/_public_dicom.py``: every column of the table (the Basic
  Profile and each option), scraped from the standard's "current" Part 15 chapter E on
  2025-06-24 (edition 2025b by NEMA's release calendar).
* ``dicom-anonymizer`` 2.1.0, ``dicomanonymizer/dicom_anonymization_databases/
  dicomfields_2026c.py``: the Basic Profile column of edition 2026c.

Where both have a row their Basic Profile actions agree (checked below; the script fails
otherwise). The 2026c rows that the 2025 scrape lacks are added with their Basic Profile action
and no option entries (recorded per row in ``source``).

Run::

    pip download --no-deps --python-version 3.12 --only-binary=:all: idiscore==1.6.0 \
        dicom-anonymizer==2.1.0 -d /tmp/e11
    python services/deid/tools/gen_table_e1_1.py /tmp/e11
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

from pydicom import datadict

OUT = Path(__file__).resolve().parents[1] / "src/pacs_deid/data/table_e1_1.json"
IDISCORE_FILE = "idiscore/_public_dicom.py"
KITWARE_FILE = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"

# idiscore's rule-set variable -> our option key (PS3.15 E.3 option names, CID 7050 codes)
OPTION_SETS = {
    "retain_safe_private": "retain_safe_private",
    "retain_uid": "retain_uids",
    "retain_device_id": "retain_device_identity",
    "retain_institution_id": "retain_institution_identity",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "retain_full_dates": "retain_long_full_dates",
    "retain_modified_dates": "retain_long_modified_dates",
    "clean_descriptors": "clean_descriptors",
    "clean_structured_content": "clean_structured_content",
    "clean_graphics": "clean_graphics",
}
ACTIONS = {
    "DUMMY": "D",
    "EMPTY": "Z",
    "REMOVE": "X",
    "KEEP": "K",
    "CLEAN": "C",
    "UID": "U",
    "EMPTY_OR_DUMMY": "Z/D",
    "REMOVE_OR_EMPTY": "X/Z",
    "REMOVE_OR_DUMMY": "X/D",
    "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}
KITWARE_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


def _read(wheel_dir: Path, member: str) -> str:
    for wheel in wheel_dir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return archive.read(member).decode()
    raise SystemExit(f"{member} not found in any wheel under {wheel_dir}")


def _idiscore_sets(source: str) -> dict[str, dict[str, str]]:
    """Rule-set name -> {tag pattern: action}; tag patterns are 8 hex digits, ``xx`` for a
    repeating group, or ``private``."""
    sets: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        name = node.targets[0].id  # type: ignore[attr-defined]
        rules = {k.arg: k.value for k in node.value.keywords}["rules"]
        table: dict[str, str] = {}
        for rule in rules.elts:  # type: ignore[attr-defined]
            identifier, action = rule.elts
            kind = identifier.func.id
            tag = "private" if kind == "PrivateTags" else identifier.args[0].value.lower()
            table[tag] = ACTIONS[action.attr]
        sets[name] = table
    return sets


def _kitware_basic(source: str) -> dict[str, str]:
    basic: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign):
            continue
        name = node.targets[0].id  # type: ignore[attr-defined]
        if name not in KITWARE_LISTS or not isinstance(node.value, ast.List):
            continue
        for element in node.value.elts:
            values = [v.value for v in element.elts]  # type: ignore[attr-defined]
            if len(values) == 2:
                basic[f"{values[0]:04x}{values[1]:04x}"] = KITWARE_LISTS[name]
    return basic


def _names(tag: str) -> tuple[str, str]:
    if tag == "private":
        return "", "Private Attributes"
    if "xx" in tag:
        return "", {"50": "Curve Data", "60": "Overlay"}[tag[:2]] + f" ({tag})"
    number = int(tag, 16)
    if datadict.dictionary_has_tag(number):
        return datadict.keyword_for_tag(number), datadict.dictionary_description(number)
    return "", f"({tag[:4]},{tag[4:]})"


def main() -> None:
    wheel_dir = Path(sys.argv[1])
    sets = _idiscore_sets(_read(wheel_dir, IDISCORE_FILE))
    newer = _kitware_basic(_read(wheel_dir, KITWARE_FILE))
    basic = sets["basic_profile"]
    disagree = {
        t: (basic[t], newer[t]) for t in basic.keys() & newer.keys() if basic[t] != newer[t]
    }
    if disagree:
        raise SystemExit(f"sources disagree on the Basic Profile: {disagree}")
    rows = []
    for tag in sorted(basic.keys() | newer.keys()):
        keyword, name = _names(tag)
        options = {key: sets[var][tag] for var, key in OPTION_SETS.items() if tag in sets[var]}
        rows.append(
            {
                "tag": tag,
                "keyword": keyword,
                "name": name,
                "basic": basic.get(tag, newer.get(tag)),
                "options": options,
                "source": "2025b" if tag in basic else "2026c",
            }
        )
    document = {
        "title": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "editions": {
            "2025b": "idiscore 1.6.0 (PyPI) idiscore/_public_dicom.py, scraped 2025-06-24",
            "2026c": f"dicom-anonymizer 2.1.0 (PyPI) {KITWARE_FILE}, Basic Profile column only",
        },
        "generator": "services/deid/tools/gen_table_e1_1.py",
        "actions": "D Z X K C U and combined Z/D X/Z X/D X/Z/D X/Z/U* (PS3.15 Table E.1-1 key)",
        "rows": rows,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main()
