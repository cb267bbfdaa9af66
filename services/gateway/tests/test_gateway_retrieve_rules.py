"""Retrieve identifiers, proposed contexts and the choice of syntax on the way out (no network)."""

from __future__ import annotations

import pytest
from pacs.type.v1 import instance_pb2
from pacs_common.transfer_syntaxes import Choice, choose
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE
from pacs_gateway.dimse.find_identifier import InvalidIdentifierError
from pacs_gateway.dimse.retrieve_request import (
    MAX_CONTEXTS,
    accepted_syntaxes,
    proposed_contexts,
    retrieve_request_of,
)
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.presentation import PresentationContext, build_context

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_series_retrieve_keeps_unique_keys_of_level_and_above() -> None:
    request = retrieve_request_of(
        _identifier("SERIES", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4\\1.2.3.5"),
        STUDY_ROOT_MOVE,
    )
    assert request.level == "SERIES"
    assert request.match == {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4\\1.2.3.5"}


def test_patient_level_retrieve_uses_patient_id() -> None:
    request = retrieve_request_of(_identifier("PATIENT", PatientID="PID-7"), PATIENT_ROOT_MOVE)
    assert request.match == {"PatientID": "PID-7"}


@pytest.mark.parametrize(
    "identifier",
    [
        _identifier("SERIES", StudyInstanceUID="1.2.3"),  # the level's unique key is missing
        _identifier("IMAGE", SOPInstanceUID=""),
        _identifier("PATIENT", PatientID="X"),  # not a Study Root level
    ],
)
def test_retrieve_without_the_levels_unique_key_is_a900(identifier: Dataset) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        retrieve_request_of(identifier, STUDY_ROOT_GET)
    assert info.value.status == codes.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_wildcards_are_refused_in_retrieve_keys() -> None:
    with pytest.raises(InvalidIdentifierError):
        retrieve_request_of(_identifier("STUDY", StudyInstanceUID="1.2.*"), STUDY_ROOT_MOVE)


def _ref(sop_class: str, syntax: str) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(sop_class_uid=sop_class, transfer_syntax_uid=syntax)


def test_each_stored_syntax_gets_its_own_context_plus_uncompressed() -> None:
    contexts = proposed_contexts(
        [_ref(CT, JPEG2000), _ref(CT, ExplicitVRLittleEndian), _ref(MR, RLELossless)]
    )
    proposed = [(str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax]) for cx in contexts]
    assert proposed == [
        (CT, [JPEG2000]),
        (CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MR, [RLELossless]),
        (MR, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    ]


def test_too_many_contexts_fall_back_to_uncompressed_only() -> None:
    refs = [_ref(f"1.2.3.{i}", s) for i in range(70) for s in (JPEG2000, RLELossless)]
    contexts = proposed_contexts(refs)
    assert len(contexts) == 70 <= MAX_CONTEXTS
    assert all(not cx.transfer_syntax[0].is_compressed for cx in contexts)


def _accepted(sop_class: str, syntax: str) -> PresentationContext:
    context = build_context(sop_class, [syntax])
    context.result = 0
    return context


def test_stored_syntax_is_kept_when_accepted() -> None:
    accepted = accepted_syntaxes(
        [_accepted("1.2.840.10008.5.1.4.1.1.7", JPEG2000)], "1.2.840.10008.5.1.4.1.1.7"
    )
    assert choose(JPEG2000, accepted) == Choice(JPEG2000, transcode=False)


def test_lossless_instance_goes_to_an_accepted_lossless_syntax() -> None:
    assert choose(RLELossless, {ImplicitVRLittleEndian}) == Choice(ImplicitVRLittleEndian, True)
    assert choose(ExplicitVRLittleEndian, {HTJ2KLossless}) == Choice(HTJ2KLossless, True)
    # uncompressed is preferred over another compression (only decoding, read everywhere)
    assert choose(RLELossless, {JPEGLSLossless, ExplicitVRLittleEndian}).transfer_syntax_uid == (
        ExplicitVRLittleEndian
    )


def test_lossy_only_for_lossy_instances_or_with_the_setting() -> None:
    assert choose(RLELossless, {JPEG2000}) is None  # a lossless instance is never made lossy
    assert choose(RLELossless, {JPEG2000}, lossy_fallback=True) == Choice(
        JPEG2000, transcode=True, allow_lossy=True
    )
    assert choose(JPEGBaseline8Bit, {JPEG2000}) == Choice(JPEG2000, True, allow_lossy=True)
    # a lossy instance decoded to a lossless syntax loses nothing more: no lossy permission
    assert choose(JPEGBaseline8Bit, {ExplicitVRLittleEndian}) == Choice(
        ExplicitVRLittleEndian, True
    )
