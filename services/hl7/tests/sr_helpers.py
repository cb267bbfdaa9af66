"""TID 1500 measurement reports written by highdicom (a library we did not write)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes


def tid1500_report(image: Dataset, length_mm: float = 12.5) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR measurement report (TID 1500) with one planar ROI group (TID
    1410) on ``image``: a Length of ``length_mm`` at finding site Lung, tracking "Lesion 1"."""
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10.0, 10.0], [20.0, 20.0], [10.0, 20.0], [10.0, 10.0]]),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
        ),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Lesion 1"),
        referenced_region=region,
        finding_type=codes.SCT.Lesion,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)],
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Length, value=length_mm, unit=codes.UCUM.Millimeter)
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name="RAD^RACHEL"
                ),
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[image],
        content=report,
        series_number=100,
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cloudpacs tests",
        is_complete=True,
        is_final=True,
    )
