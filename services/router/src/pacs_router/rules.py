"""The rules file: destinations, routing rules per tenant, and prefetch (YAML or JSON).

One file, named by ``PACS_ROUTER_RULES_FILE``, validated with pydantic when the router starts;
a file that does not validate stops the start with a message naming the file and the field
(never a router that half-applies its rules)::

    destinations:
      site-b:                      # the name: its queue is the topic pacs.route.site-b.v1
        kind: dimse                # C-STORE SCU (PS3.4 Annex B)
        host: pacs.site-b.example
        port: 11112
        ae_title: SITE_B
        tls: {enabled: true, ca_file: /etc/router/site-b-ca.crt}
      research:
        kind: stow                 # DICOMweb STOW-RS (PS3.18 10.5)
        url: https://research.example/dicom-web
    tenants:
      hospital-a:
        - name: ct-to-site-b
          destinations: [site-b]
          match:
            calling_ae: ["CT*"]                  # (0002,0016) Source Application Entity Title
            modality: [CT, MR]
            sop_class_uid: ["1.2.840.10008.5.1.4.1.1.2"]
            attributes: {InstitutionName: "Hospital A*"}
            time_of_day: {start: "18:00", end: "07:00", timezone: Europe/Paris}
    prefetch:
      hospital-a:
        archive: {host: archive.example, port: 104, ae_title: ARCHIVE}
        move_destination: CLOUDPACS
        max_studies: 10

Criteria of one rule must all hold; each list matches when any of its values does; values
use DICOM wildcard matching (``*`` and ``?``, PS3.4 C.2.2.2.4). Every rule that matches sends
the instance to each of its destinations (once per destination, however many rules name it).
"""

from __future__ import annotations

import json
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""Destination names become Kafka topic and consumer group names: keep them simple."""


class RulesFileError(SystemExit):
    """The rules file is missing or invalid: the router cannot start (fail fast)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsOptions(_Strict):
    """TLS towards a destination that asks for it (PS3.15 B.1, the Basic TLS profile)."""

    enabled: bool = False
    ca_file: Path | None = Field(None, description="CA that signed the destination's certificate")
    cert_file: Path | None = Field(None, description="our client certificate, if it asks for one")
    key_file: Path | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsOptions:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if self.enabled and path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self


class DimseDestination(_Strict):
    """A DICOM peer that receives C-STORE."""

    kind: Literal["dimse"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(min_length=1, max_length=16)
    tls: TlsOptions = Field(default_factory=TlsOptions)

    @property
    def address(self) -> str:
        """How status output names it."""
        return f"{self.ae_title}@{self.host}:{self.port}{' (TLS)' if self.tls.enabled else ''}"


class StowDestination(_Strict):
    """A DICOMweb origin that receives STOW-RS (POST {url}/studies)."""

    kind: Literal["stow"]
    url: str = Field(pattern=r"^https?://")
    bearer_token_file: Path | None = Field(
        None, description="file holding a bearer token sent as Authorization (read per send)"
    )
    ca_file: Path | None = Field(None, description="CA of an https origin (system CAs if unset)")

    @property
    def address(self) -> str:
        """How status output names it."""
        return self.url


Destination = Annotated[DimseDestination | StowDestination, Field(discriminator="kind")]


class TimeWindow(_Strict):
    """A daily window ``[start, end)``; one whose end is before its start spans midnight."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_text(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 18:00 as the number 1080 (base 60): refuse it rather than
        # take it as seconds.
        if not isinstance(value, (str, time)):
            raise ValueError('write the time as a quoted "HH:MM" string')
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Match(_Strict):
    """What an instance must have for a rule to route it (every criterion given must hold)."""

    calling_ae: list[str] = Field(default_factory=list)
    modality: list[str] = Field(default_factory=list)
    sop_class_uid: list[str] = Field(default_factory=list)
    attributes: dict[str, str | list[str]] = Field(
        default_factory=dict, description="keyword or tag (GGGGEEEE) -> pattern(s)"
    )
    time_of_day: TimeWindow | None = None

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name in value:
            if tag_for_keyword(name) is None and not re.fullmatch(r"[0-9A-Fa-f]{8}", name):
                raise ValueError(f"{name!r} is neither a DICOM keyword nor a tag GGGGEEEE")
        return value


class Rule(_Strict):
    """One routing rule of a tenant."""

    name: str = Field(min_length=1)
    destinations: list[str] = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    include_new_versions: bool = Field(
        False,
        description="also route an instance stored again with other bytes (a transcoder's or "
        "a corrected version); off by default: the peer already has the instance",
    )


class DimsePeer(_Strict):
    """A remote archive queried and retrieved by prefetch."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(min_length=1, max_length=16)


class Prefetch(_Strict):
    """Prefetch of a patient's prior studies when an order arrives over HL7, for one tenant."""

    archive: DimsePeer
    move_destination: str = Field(
        min_length=1, max_length=16, description="AE title of cloudpacs' gateway at the archive"
    )
    max_studies: int = Field(10, ge=1, le=1000)
    modalities: list[str] = Field(
        default_factory=list, description="only priors of these modalities (all if empty)"
    )
    match_issuer: bool = Field(
        False, description="also match Issuer of Patient ID (the archive must use the HIS's)"
    )


class RulesFile(_Strict):
    """The whole file."""

    destinations: dict[str, Destination] = Field(default_factory=dict)
    tenants: dict[str, list[Rule]] = Field(default_factory=dict)
    prefetch: dict[str, Prefetch] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> RulesFile:
        for name in self.destinations:
            if not re.fullmatch(NAME, name):
                raise ValueError(
                    f"destination name {name!r} must match {NAME} (it names a Kafka topic)"
                )
        for tenant, rules in self.tenants.items():
            seen: set[str] = set()
            for rule in rules:
                if rule.name in seen:
                    raise ValueError(f"tenant {tenant!r}: two rules named {rule.name!r}")
                seen.add(rule.name)
                unknown = [d for d in rule.destinations if d not in self.destinations]
                if unknown:
                    raise ValueError(
                        f"tenant {tenant!r}, rule {rule.name!r}: unknown destination(s) "
                        f"{', '.join(unknown)}"
                    )
        return self


def load_rules(path: Path) -> RulesFile:
    """Read and validate the rules file (``.json``: JSON; anything else: YAML).

    Raises:
        RulesFileError: the file is missing, unreadable or invalid; the message names the
            file and, for invalid content, each field at fault.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesFileError(f"routing rules file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RulesFileError(f"routing rules file {path} is not valid: {exc}") from exc
    try:
        return RulesFile.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(file)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise RulesFileError(f"routing rules file {path} is invalid: {problems}") from exc
