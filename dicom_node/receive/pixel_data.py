"""Truncation checks: is all the Pixel Data a received instance's header declares there?

:func:`check_pixel_data` compares the declared Pixel Data length with the
received bytes and, for native Pixel Data, with the image geometry;
encapsulated Pixel Data must end with a Sequence Delimitation Item. The
extent comes from :func:`~dicom_node.receive.header_scan.scan_header` or, for
the pydicom fallback, from :func:`_pydicom_pixel_data_extent`. Import these
names from :mod:`dicom_node.receive.header`.

References
----------
DICOM PS3.5 7.1 (data element length), 8.1.1 (native format: the size of
Pixel Data), 8.2 and A.4 (encapsulated format: items ended by a Sequence
Delimitation Item); PS3.3 C.7.6.3 (Image Pixel Module).
"""

from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom.dataelem import RawDataElement

from dicom_node.errors import InvalidInstanceError
from dicom_node.receive.header_scan import (
    _ITEM,
    _PIXEL_DATA,
    _SEQUENCE_END,
    _TAG_LENGTH,
    _UNDEFINED,
    NATIVE_SYNTAXES,
    ScannedHeader,
)


def _pydicom_pixel_data_extent(encoded: bytes) -> tuple[int, int] | None:
    """(value offset, declared length) of the top-level Pixel Data, read by pydicom."""
    ds = pydicom.dcmread(BytesIO(encoded), defer_size=1024)
    # keep_deferred: without it pydicom 3 reads the deferred value and returns a
    # converted DataElement, which has no value offset.
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(element, RawDataElement) or element.value is not None:
        return None  # absent, or a value small enough to be read: it is complete
    return int(element.value_tell), int(element.length)


def _skip_fragments(encoded: bytes, pos: int) -> int | None:
    """Offset after the Sequence Delimitation Item of encapsulated Pixel Data, None if missing."""
    end = len(encoded)
    while pos + 8 <= end:
        group, element, length = _TAG_LENGTH.unpack_from(encoded, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED:
            return None
        pos += length
    return None


def check_pixel_data(
    encoded: bytes,
    extent: tuple[int, int] | None,
    ds: pydicom.Dataset | ScannedHeader,
    transfer_syntax_uid: str,
) -> None:
    """Check that the Pixel Data the header declares is all there.

    Parameters
    ----------
    encoded : bytes
        Part 10 bytes of the instance.
    extent : tuple of int or None
        (offset of the Pixel Data value in ``encoded``, declared length), None
        when the dataset has no top-level Pixel Data (nothing to check).
    ds : pydicom.Dataset or ScannedHeader
        Rows, Columns, SamplesPerPixel, BitsAllocated, NumberOfFrames.
    transfer_syntax_uid : str
        The dataset's transfer syntax.

    Raises
    ------
    InvalidInstanceError
        If the declared length runs past the received bytes, native Pixel
        Data is shorter than Rows x Columns x Samples per Pixel x Bits
        Allocated / 8 x Number of Frames, or encapsulated Pixel Data has no
        Sequence Delimitation Item (the message gives the figures).

    References
    ----------
    DICOM PS3.5 7.1 (data element length), 8.1.1 (native format: the size of
    Pixel Data), 8.2 and A.4 (encapsulated format: items ended by a Sequence
    Delimitation Item); PS3.3 C.7.6.3 (Image Pixel Module).
    """
    if extent is None:
        return
    offset, length = extent
    present = len(encoded) - offset
    if length == _UNDEFINED:
        if _skip_fragments(encoded, offset) is None:
            raise InvalidInstanceError(
                "Pixel Data truncated: the encapsulated fragments end without a Sequence "
                "Delimitation Item (rule PS3.5 A.4)"
            )
        return
    if length > present:
        raise InvalidInstanceError(
            f"Pixel Data truncated: it declares {length} bytes but {max(present, 0)} follow "
            "(rule PS3.5 7.1: a value is as long as its length field says)"
        )
    if transfer_syntax_uid not in NATIVE_SYNTAXES:
        return
    try:
        rows, columns = int(ds.get("Rows")), int(ds.get("Columns"))
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated"))
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return  # no image geometry to compare with; the pipelines refuse such images
    expected = -(-rows * columns * samples * frames * bits // 8)
    if length < expected:
        raise InvalidInstanceError(
            f"Pixel Data truncated: {length} bytes where Rows {rows} x Columns {columns} x "
            f"Samples per Pixel {samples} x Bits Allocated {bits} x {frames} frame(s) need "
            f"{expected} (rule PS3.5 8.1.1)"
        )
