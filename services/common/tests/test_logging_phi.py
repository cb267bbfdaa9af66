"""Patient data stays out of the JSON log lines unless explicitly allowed."""

from __future__ import annotations

import json
import logging

import pytest
from pacs_common.logging import REDACTED, configure_logging, redact_uids

STUDY_UID = "1.2.826.0.1.3680043.8.498.11223344556677889900"
SOP_UID = "2.25.123456789012345678901234567890"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_phi_fields_and_uids_in_text_and_tracebacks_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test", "INFO")
    log = logging.getLogger("phi-test")
    log.info(
        "stored %s with %s from 127.0.0.1",
        STUDY_UID,
        EXPLICIT_VR_LITTLE_ENDIAN,
        extra={"sop_instance_uid": SOP_UID, "patient_name": "DOE^JANE", "size": 12},
    )
    try:
        raise ValueError(f"instance {SOP_UID} of study {STUDY_UID} is broken")
    except ValueError:
        log.exception("handler failed")
    err = capsys.readouterr().err
    assert STUDY_UID not in err
    assert SOP_UID not in err
    assert "DOE^JANE" not in err
    first, second = _lines(err)
    assert first["sop_instance_uid"] == REDACTED
    assert first["patient_name"] == REDACTED
    assert first["size"] == 12
    # What says nothing about a patient stays readable for diagnosis.
    assert EXPLICIT_VR_LITTLE_ENDIAN in str(first["message"])
    assert "127.0.0.1" in str(first["message"])
    assert "ValueError" in str(second["exc_info"])


def test_patient_data_is_logged_when_explicitly_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", "INFO", allow_patient_data=True)
    logging.getLogger("phi-test").info("stored %s", STUDY_UID, extra={"sop_instance_uid": SOP_UID})
    (line,) = _lines(capsys.readouterr().err)
    assert STUDY_UID in str(line["message"])
    assert line["sop_instance_uid"] == SOP_UID


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"uid={STUDY_UID};", f"uid={REDACTED};"),
        ("version 1.85.1 and address 10.1.2.3", "version 1.85.1 and address 10.1.2.3"),
        (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2"),
        ("1.2.840.113619.2.55.3.604688", REDACTED),
        (f"{STUDY_UID}.X1 is not a UID", f"{REDACTED}.X1 is not a UID"),
    ],
)
def test_redact_uids(text: str, expected: str) -> None:
    assert redact_uids(text) == expected
