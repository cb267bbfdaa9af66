"""Pixel conversion on retrieve: an instance, in a transfer syntax its receiver accepted.

This is the only place where C-MOVE and C-GET change an instance's encoding on the way out,
behind one function, :func:`convert_for_receiver`. It decompresses in process (pydicom with
pylibjpeg/openjpeg/pyjpegls); the transcoder service (``TranscodeService``) will replace it,
so that retrieval can also compress, and the same conversion serves DICOMweb.
"""

from __future__ import annotations

import io
from collections.abc import Collection

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

UNCOMPRESSED_OUT = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
"""What every storage SCP must accept (Implicit VR Little Endian is the default, PS3.5 10.1)."""


class ConversionError(ValueError):
    """No accepted transfer syntax can carry the instance, or it cannot be decoded."""


def convert_for_receiver(part10: bytes, accepted_syntaxes: Collection[str]) -> Dataset:
    """The stored instance as a dataset pynetdicom will send in one of ``accepted_syntaxes``.

    Kept as stored when its syntax was accepted. A compressed instance is decompressed (same
    SOP Instance UID) when only uncompressed syntaxes were accepted (PS3.5 A.1-A.2);
    pynetdicom itself converts between the little endian uncompressed syntaxes
    (explicit/implicit VR, deflated).

    Args:
        part10: the stored Part 10 bytes.
        accepted_syntaxes: transfer syntaxes the receiver accepted for the instance's SOP class.

    Raises:
        ConversionError: no accepted syntax can carry it, or it cannot be decoded.
    """
    try:
        dataset = dcmread(io.BytesIO(part10))
    except Exception as exc:
        raise ConversionError(f"stored instance unreadable: {exc}") from exc
    stored = UID(str(dataset.file_meta.TransferSyntaxUID))
    if stored in accepted_syntaxes:
        return dataset
    if not any(UID(ts).is_little_endian and not UID(ts).is_compressed for ts in accepted_syntaxes):
        raise ConversionError(f"receiver accepts neither {stored} nor an uncompressed syntax")
    if stored.is_compressed:
        try:
            # Same instance, another encoding: keep its SOP Instance UID (pydicom would make
            # a new one by default, as if it were a derived image).
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise ConversionError(f"cannot decompress {stored}: {exc}") from exc
    elif not stored.is_little_endian:
        raise ConversionError("big endian instances are only sent to receivers that accept them")
    return dataset
