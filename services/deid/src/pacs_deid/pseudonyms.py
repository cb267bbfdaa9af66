"""Pseudonyms keyed per project: the same input and key give the same output on every run,
every instance of the service and every site that holds the key.

Each value is an HMAC-SHA256 of the original under the project's secret key, with a label per
kind so that a patient ID and a UID with the same text never share a pseudonym:

* UIDs become ``2.25.<integer>`` (PS3.5 B.2: a UUID-derived UID under the 2.25 root; the first
  128 bits of the HMAC are the integer, so the UID is at most 44 characters);
* a patient's ID and name become ``<prefix><16 hex digits>`` and ``<prefix>^<same digits>``;
* a patient's date shift (Retain Longitudinal Temporal Information with Modified Dates, PS3.15
  E.3.6) is a whole number of days in a configured range, the same for all of the patient's
  studies so that intervals between them are kept.

Without the key the pseudonyms cannot be reversed or recomputed (HMAC is a PRF); with it they
can be recomputed from an original but still not reversed, which is why an optional
re-identification map exists (:mod:`pacs_deid.reid_map`).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache


class Pseudonymizer:
    """The pseudonyms of one project."""

    def __init__(
        self,
        key: bytes,
        *,
        patient_prefix: str = "ANON",
        shift_days_min: int = -3500,
        shift_days_max: int = -1700,
    ) -> None:
        if not key:
            raise ValueError("a pseudonym key must not be empty")
        if shift_days_min > shift_days_max:
            raise ValueError("shift_days_min must not exceed shift_days_max")
        self._key = key
        self.patient_prefix = patient_prefix
        self.shift_days_min = shift_days_min
        self.shift_days_max = shift_days_max
        self.uid = lru_cache(maxsize=65536)(self._uid)

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def _uid(self, uid: str) -> str:
        """The pseudonym of one UID (cached: a study's UIDs repeat in every file)."""
        return "2.25." + str(int.from_bytes(self._digest("uid", uid.strip())[:16], "big"))

    def patient_code(self, patient_id: str, issuer: str = "") -> str:
        """16 hex digits naming a patient (their ID qualified by its issuer)."""
        return self._digest("patient", f"{issuer}\0{patient_id}").hex()[:16].upper()

    def patient_id(self, patient_id: str, issuer: str = "") -> str:
        """The replacement Patient ID."""
        return self.patient_prefix + self.patient_code(patient_id, issuer)

    def patient_name(self, patient_id: str, issuer: str = "") -> str:
        """The replacement Patient's Name (family name component only)."""
        return f"{self.patient_prefix}^{self.patient_code(patient_id, issuer)}"

    def person_name(self, name: str) -> str:
        """A dummy for another person's name (operator, physician) that stays the same for the
        same original, so that "same reader" survives without the name."""
        return "PERSON^" + self._digest("person", name.strip().upper()).hex()[:8].upper()

    def ae_title(self, title: str) -> str:
        """A stand-in AE title (16 characters at most, PS3.5 6.2)."""
        return "AE" + self._digest("ae", title.strip()).hex()[:10].upper()

    def date_shift_days(self, patient_id: str, issuer: str = "") -> int:
        """The patient's shift in days, within the configured range."""
        span = self.shift_days_max - self.shift_days_min + 1
        number = int.from_bytes(self._digest("shift", f"{issuer}\0{patient_id}")[:8], "big")
        return self.shift_days_min + number % span
