"""One de-identification from Part 10 bytes to Part 10 bytes: parse, honour
BurnedInAnnotation, apply the profile, clean pixels when asked, record pseudonyms in the
re-identification map when the project keeps one, write.

This is the domain core every entry point uses (a streamed instance, a stored study, a routing
rule); it is synchronous and CPU-bound, so callers run it in a worker thread.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import pydicom.config
from pacs_common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from pacs_common.metrics import DEID_DURATION, DEID_INSTANCES, DEID_MASKED_REGIONS
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pacs_deid.engine import Deidentifier, Report
from pacs_deid.options import BASIC_PROFILE, METHODS, Option, parse_options
from pacs_deid.part10 import write_part10
from pacs_deid.pixels import Masked, PixelCleaner, check_burned_in
from pacs_deid.profile import Profile
from pacs_deid.pseudonyms import Pseudonymizer
from pacs_deid.reid_map import Original, ReidentificationMap
from pacs_deid.safe_private import SafePrivate
from pacs_deid.settings import DeidSettings, ProjectSettings


@dataclass
class Result:
    """A de-identified instance and what was done to it."""

    data: bytes
    dataset: Dataset
    report: Report
    masked: list[Masked] = field(default_factory=list)
    method_codes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def configure_pydicom() -> None:
    """Process-wide pydicom settings of a de-identification process: values are not
    re-validated on read or write (a source's odd value is kept or replaced by the profile,
    never "fixed"; validating every value costs a fifth of the time per file)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


@lru_cache(maxsize=64)
def _profile(options: frozenset[Option]) -> Profile:
    return Profile(options)


class Deidentification:
    """The projects of one service and the machinery they share."""

    def __init__(
        self,
        settings: DeidSettings,
        reid_map: ReidentificationMap | None = None,
        pixel_cleaner: PixelCleaner | None = None,
    ) -> None:
        self.settings = settings
        self.reid_map = reid_map
        self.pixel_cleaner = pixel_cleaner
        self._pseudonyms = {
            name: Pseudonymizer(
                p.key.get_secret_value().encode(),
                patient_prefix=p.patient_prefix,
                shift_days_min=p.shift_days_min,
                shift_days_max=p.shift_days_max,
            )
            for name, p in settings.projects.items()
        }
        self._engines: dict[tuple[str, frozenset[Option]], Deidentifier] = {}

    def project(self, name: str) -> ProjectSettings:
        """A configured project. Raises NotFoundError for an unknown one."""
        project = self.settings.projects.get(name)
        if project is None:
            raise NotFoundError(f"no de-identification project {name!r}")
        return project

    def options_for(self, project: str, names: list[str] | tuple[str, ...]) -> frozenset[Option]:
        """The options asked for, or the project's defaults when none are named."""
        return parse_options(list(names) if names else self.project(project).options)

    def _engine(self, project_name: str, options: frozenset[Option]) -> Deidentifier:
        """The engine of a project and option set (built once: a profile resolves the whole
        table)."""
        key = (project_name, options)
        engine = self._engines.get(key)
        if engine is None:
            overlay_cleaner = (
                self.pixel_cleaner.clean_overlay
                if self.pixel_cleaner and Option.CLEAN_GRAPHICS in options
                else None
            )
            engine = Deidentifier(
                _profile(options),
                self._pseudonyms[project_name],
                SafePrivate(self.project(project_name).safe_private),
                overlay_cleaner,
            )
            self._engines[key] = engine
        return engine

    def deidentify(
        self,
        project_name: str,
        options: frozenset[Option],
        data: bytes,
        trigger: str = "instance",
    ) -> Result:
        """:meth:`run`, counted in the ``pacs_deid_*`` metrics under ``trigger``."""
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = self.run(project_name, options, data)
            outcome = "ok"
            for masked in result.masked:
                DEID_MASKED_REGIONS.labels(masked.reason).inc()
            return result
        except (InvalidArgumentError, FailedPreconditionError):
            outcome = "refused"
            raise
        finally:
            DEID_INSTANCES.labels(outcome, trigger).inc()
            DEID_DURATION.labels(trigger).observe(time.perf_counter() - started)

    def run(self, project_name: str, options: frozenset[Option], data: bytes) -> Result:
        """De-identify one Part 10 instance.

        Raises:
            InvalidArgumentError: not a readable Part 10 instance, or pixels that cannot be
                decoded under Clean Pixel Data.
            FailedPreconditionError: burned-in annotation without Clean Pixel Data.
            NotFoundError: unknown project.
        """
        project = self.project(project_name)
        ds = _read(data)
        clean_pixels = Option.CLEAN_PIXEL_DATA in options
        check_burned_in(ds, clean_pixels, self.settings.burned_in_without_clean)
        keeps_map = self.reid_map is not None and project.reidentification_map
        originals = _originals(ds) if keeps_map else None
        engine = self._engine(project_name, options)
        masked: list[Masked] = []
        notes: list[str] = []
        if clean_pixels and self.pixel_cleaner is not None:
            # Pixels first: decoding needs the original transfer syntax and photometry.
            masked, notes = self.pixel_cleaner.clean(ds)
        report = engine.apply(ds)
        if self.reid_map is not None and originals is not None:
            self.reid_map.record(project_name, _map_entries(originals, ds, report))
        data = _write(ds)
        codes = [BASIC_PROFILE.code, *sorted(METHODS[o].code for o in options)]
        return Result(data, ds, report, masked, codes, notes + report.notes)


def _write(ds: Dataset) -> bytes:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID  # PS3.10 7.1: required, and known
    fast = write_part10(ds)
    if fast is not None:
        return fast
    buffer = io.BytesIO()
    try:
        try:
            ds.save_as(buffer, enforce_file_format=True)
        except TypeError:
            # Raw elements without a VR (implicit VR data under an explicit VR transfer
            # syntax): decode them all so that pydicom can give each its VR, then write again.
            for _ in ds.iterall():
                pass
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidArgumentError(f"the de-identified instance cannot be written: {exc}") from exc
    return buffer.getvalue()


def _read(data: bytes) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data))
        meta = getattr(ds, "file_meta", Dataset())
        has_class = "SOPClassUID" in ds or "MediaStorageSOPClassUID" in meta
        if not has_class or (
            "SOPInstanceUID" not in ds and "MediaStorageSOPInstanceUID" not in meta
        ):
            raise InvalidArgumentError(
                "no SOP Class UID or SOP Instance UID: not a composite instance (PS3.3 C.12.1)"
            )
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArgumentError(f"not a readable DICOM Part 10 instance: {exc}") from exc
    return ds


@dataclass(frozen=True)
class _Originals:
    patient_id: str
    patient_name: str
    uids: tuple[tuple[str, str], ...]


UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _originals(ds: Dataset) -> _Originals:
    return _Originals(
        str(ds.get("PatientID", "") or ""),
        str(ds.get("PatientName", "") or ""),
        tuple((k, str(ds.get(k, ""))) for k in UID_KEYWORDS if ds.get(k)),
    )


def _map_entries(originals: _Originals, ds: Dataset, report: Report) -> list[tuple[str, Original]]:
    entries = [
        (
            report.patient_pseudonym,
            Original("patient", originals.patient_id, originals.patient_name),
        )
    ]
    for keyword, original in originals.uids:
        new = str(ds.get(keyword, ""))
        if new and new != original:
            entries.append((new, Original("uid", original)))
    return entries
