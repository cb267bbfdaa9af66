"""Helpers of the indexer tests: synthetic headers, and indexing them through the same upsert
the event handler uses."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import highdicom as hd
from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes
from pacs_indexer.indexing import delete_instance, upsert_instances
from pacs_indexer.query import FindQuery, FindResult, find
from pacs_indexer.records import InstanceRecord, StoredObject, record_from_dataset
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, generate_uid


def make_instance(
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    **attributes: Any,
) -> Dataset:
    """A CT header with the given UIDs (generated when omitted) and attributes."""
    ds = Dataset()
    ds.SOPClassUID = attributes.pop("SOPClassUID", CTImageStorage)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = sop or generate_uid()
    ds.Modality = attributes.pop("Modality", "CT")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


class Catalog:
    """Indexes datasets into one database and runs queries on it."""

    def __init__(self, database: Database, extras: ExtraAttributes | None = None) -> None:
        self.database = database
        self.extras = extras or ExtraAttributes()

    def add(self, tenant: str, dataset: Dataset, stored_time: str = "") -> list[InstanceRecord]:
        return self.add_many(tenant, [dataset], stored_time)

    def add_many(
        self, tenant: str, datasets: list[Dataset], stored_time: str = ""
    ) -> list[InstanceRecord]:
        records = [self._record(tenant, dataset, stored_time) for dataset in datasets]
        with self.database.session() as session:
            return upsert_instances(session, records, self.extras)

    def _record(self, tenant: str, dataset: Dataset, stored_time: str) -> InstanceRecord:
        return record_from_dataset(
            tenant,
            dataset,
            StoredObject(
                key=f"{tenant}/{dataset.SOPInstanceUID}",
                size=1000,
                stored_time=stored_time,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
            ),
            self.extras.values_of(dataset),
        )

    def delete(self, tenant: str, sop: str) -> bool:
        with self.database.session() as session:
            return delete_instance(session, tenant, sop)

    def find(self, query: FindQuery, max_results: int = 1000) -> FindResult:
        if self.extras and query.extras is None:
            query = replace(query, extras=self.extras)
        with self.database.session() as session:
            return find(session, query, max_results)


def values(dataset: dict[str, Any], tag: str) -> list[Any]:
    """The Value array of one attribute of a DICOM JSON result ([] when empty)."""
    return list(dataset.get(tag, {}).get("Value", []))


def kos(rejected: list[Dataset], title: hd.sr.CodedConcept | None = None) -> Dataset:
    """A rejection note (highdicom KOS) referencing ``rejected``; its title defaults to
    (113001, DCM, "Rejected for Quality Reasons")."""
    content = hd.ko.KeyObjectSelection(
        document_title=title or codes.DCM.RejectedForQualityReasons,
        referenced_objects=rejected,
    )
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=rejected,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    # Encoded and read back, as the indexer gets it from storage.
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))
