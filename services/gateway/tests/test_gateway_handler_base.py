"""The DIMSE handler base: every exception becomes a DIMSE status, never reaches pynetdicom."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pacs_common.errors import InvalidArgumentError, PacsError, UnavailableError
from pacs_gateway.admission import Caller
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.handler_base import DimseFailure, DimseHandler
from pacs_gateway.io_loop import IoLoop
from prometheus_client import CollectorRegistry, Histogram
from pydicom.dataset import Dataset

ADMITTED = object()
CALLER = Caller("t", "MODALITY", "127.0.0.1")


class _Handler(DimseHandler):
    operation = "C-TEST"
    unavailable_status = codes.UNABLE_TO_CALCULATE_MATCHES
    unavailable_comment = "index unavailable"
    duration = Histogram("test_dimse_seconds", "test", registry=CollectorRegistry())


def _handler() -> _Handler:
    return _Handler(IoLoop(), lambda assoc: CALLER if assoc is ADMITTED else None, timeout_s=1)


def _status(result: Dataset) -> tuple[int, str]:
    return int(result.Status), str(result.get("ErrorComment", ""))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DimseFailure(codes.INSTANCE_MISMATCH, "why"), (codes.INSTANCE_MISMATCH, "why")),
        (UnavailableError("storage: unavailable"), (0xA701, "index unavailable")),
        (TimeoutError(), (0xA701, "index unavailable")),
        (InvalidArgumentError("bad date"), (codes.INVALID_QUERY, "bad date")),
        (PacsError("storage: data loss"), (codes.UNEXPECTED_FAILURE, "C-TEST failed")),
        (KeyError("bug"), (codes.UNEXPECTED_FAILURE, "internal error")),
    ],
)
def test_each_exception_is_answered_with_its_status(
    error: Exception, expected: tuple[int, str]
) -> None:
    def respond() -> Dataset:
        raise error

    assert _status(_handler().answer(respond)) == expected


def test_an_error_comment_is_cut_to_64_characters() -> None:
    result = _handler().failure(DimseFailure(codes.MISSING_ATTRIBUTE, "x" * 100))
    assert _status(result) == (codes.MISSING_ATTRIBUTE, "x" * 64)  # PS3.7 C.4


def test_an_association_never_admitted_is_not_authorized() -> None:
    handler = _handler()
    with pytest.raises(DimseFailure) as refused:
        handler.caller(SimpleNamespace(assoc=object()))
    assert refused.value.status == 0x0124  # PS3.7 C.5.16
    assert handler.caller(SimpleNamespace(assoc=ADMITTED)) == CALLER


def test_a_failure_after_pending_responses_ends_the_stream() -> None:
    def respond() -> Iterator[tuple[int | Dataset, Any]]:
        yield codes.PENDING, Dataset()
        raise UnavailableError("indexer: unavailable")

    responses = list(_handler().answer_each(respond))
    assert [r[0] for r in responses[:1]] == [codes.PENDING]
    final, identifier = responses[1]
    assert isinstance(final, Dataset) and identifier is None
    assert _status(final) == (0xA701, "index unavailable")
    assert len(responses) == 2


def _observed() -> float:
    return next(
        sample.value
        for metric in _Handler.duration.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )


def test_the_duration_is_observed_for_answers_and_failures() -> None:
    handler = _handler()
    before = _observed()
    handler.answer(lambda: codes.status(codes.SUCCESS))
    handler.answer(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    list(handler.answer_each(lambda: iter([])))
    assert _observed() - before == 3
