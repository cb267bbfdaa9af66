"""Settings of the hl7 service: the ORU destination as host:port."""

from __future__ import annotations

import pytest
from pacs_common.settings import KafkaSettings
from pacs_hl7.settings import Hl7Settings
from pydantic import ValidationError

KAFKA = KafkaSettings(security_protocol="PLAINTEXT")


def test_oru_target_sets_host_and_port() -> None:
    settings = Hl7Settings(kafka=KAFKA, oru_target="ris.example:2577")
    assert (settings.oru_host, settings.oru_port) == ("ris.example", 2577)


@pytest.mark.parametrize("target", ["ris.example", ":2577", "ris:0", "ris:http"])
def test_bad_oru_target_is_refused(target: str) -> None:
    with pytest.raises(ValidationError, match="oru_target"):
        Hl7Settings(kafka=KAFKA, oru_target=target)
