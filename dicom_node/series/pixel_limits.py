"""Caps checked before pixel data are decoded: a small file must not decode into gigabytes.

A received instance is stored as sent; its pixels are decoded only in a worker
(:mod:`dicom_node.series.volume`). Before that, :func:`check_pixel_limits`
compares what the header announces (Rows, Columns, NumberOfFrames,
SamplesPerPixel, BitsAllocated) with the configured caps, and, for JPEG,
JPEG-LS and JPEG 2000 frames, reads the image size that the codestream itself
announces (SOF or SIZ marker), which is what a decoder allocates; a codestream
larger than the header says is refused too. RLE decodes into exactly the
header's size. Native (uncompressed) pixel data must have the announced length.

References
----------
DICOM PS3.3 C.7.6.3 Image Pixel Module; PS3.5 A.4 (encapsulated transfer
syntaxes); ITU-T T.81 B.2.2 (JPEG frame header); ITU-T T.800 A.5.1 (JPEG 2000 SIZ).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable

import pydicom
from pydantic import BaseModel, ConfigDict, Field
from pydicom.encaps import generate_fragmented_frames
from pydicom.uid import UID

from dicom_node.errors import SeriesLoadError

logger = logging.getLogger(__name__)

#: JPEG SOF markers (baseline, extended, progressive, lossless; JPEG-LS SOF55).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)
#: Bytes of a frame's codestream read to find its size marker.
_HEADER_SCAN_BYTES = 65536


class PixelLimits(BaseModel):
    """Caps on what one instance and one series may decode to (``[pixels]``).

    Parameters
    ----------
    max_rows, max_columns : int
        Largest Rows and Columns (CT: 512, sometimes 1024).
    max_frames : int
        Largest NumberOfFrames of one instance.
    max_instance_bytes : int
        Largest decoded size of one instance: rows x columns x frames x
        samples x BitsAllocated / 8.
    max_series_bytes : int
        Largest decoded size of all instances of a series together.

    References
    ----------
    DICOM PS3.3 C.7.6.3 Image Pixel Module.
    """

    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(4096, ge=1, le=65535)
    max_columns: int = Field(4096, ge=1, le=65535)
    max_frames: int = Field(4096, ge=1)
    max_instance_bytes: int = Field(1024**3, ge=1)
    max_series_bytes: int = Field(8 * 1024**3, ge=1)


def _int(dataset: pydicom.Dataset, keyword: str, default: int) -> int:
    value = dataset.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise SeriesLoadError(f"{keyword} {str(value)[:32]!r} is not an integer") from err


def decoded_size_bytes(dataset: pydicom.Dataset) -> int:
    """Return the size in bytes the pixel data of ``dataset`` decode to, from its header.

    Parameters
    ----------
    dataset : pydicom.Dataset
        An image instance (pixel data need not be loaded).

    Returns
    -------
    int
        rows x columns x frames x SamplesPerPixel x ceil(BitsAllocated / 8).

    Raises
    ------
    SeriesLoadError
        If one of these attributes is not an integer or not positive.

    References
    ----------
    DICOM PS3.3 C.7.6.3 Image Pixel Module.
    """
    rows = _int(dataset, "Rows", 0)
    columns = _int(dataset, "Columns", 0)
    frames = _int(dataset, "NumberOfFrames", 1) or 1
    samples = _int(dataset, "SamplesPerPixel", 1)
    bits = _int(dataset, "BitsAllocated", 16)
    if min(rows, columns, frames, samples, bits) < 1:
        raise SeriesLoadError(
            f"image attributes out of range: {rows} x {columns} x {frames} frames, "
            f"{samples} samples, {bits} bits allocated"
        )
    return rows * columns * frames * samples * ((bits + 7) // 8)


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """Return (rows, columns) that a JPEG, JPEG-LS or JPEG 2000 codestream announces.

    Parameters
    ----------
    frame : bytes
        The start of one encapsulated frame (a few kB suffice).

    Returns
    -------
    tuple of int or None
        (rows, columns) from the SOF (ITU-T T.81, T.87) or SIZ (T.800) marker;
        None when no such marker is found in the bytes given (for example RLE).

    References
    ----------
    ITU-T T.81 B.2.2 (frame header); ITU-T T.800 A.5.1 (SIZ: Xsiz, Ysiz, XOsiz, YOsiz).
    """
    data = bytes(frame[:_HEADER_SCAN_BYTES])
    if data[:2] == b"\xff\x4f":  # JPEG 2000 codestream: SOC then SIZ
        if len(data) >= 24 and data[2:4] == b"\xff\x51":
            xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[8:24])
            return max(0, ysiz - yosiz), max(0, xsiz - xosiz)
        return None
    if data[:2] != b"\xff\xd8":  # not JPEG (SOI)
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD8:
            position += 2 if marker != 0xFF else 1
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _SOF_MARKERS and position + 9 <= len(data):
            rows, columns = struct.unpack(">HH", data[position + 5 : position + 9])
            return rows, columns
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
        position += 2 + max(length, 2)
    return None


def _encapsulated_frames(dataset: pydicom.Dataset) -> Iterable[bytes]:
    frames = _int(dataset, "NumberOfFrames", 1) or 1
    for frame in generate_fragmented_frames(dataset.PixelData, number_of_frames=frames):
        yield b"".join(frame[:4])  # the first fragments hold the marker segments


def check_pixel_limits(dataset: pydicom.Dataset, limits: PixelLimits) -> int:
    """Refuse an instance whose pixel data would decode beyond ``limits``; return its size.

    Call before ``dataset.pixel_array``.

    Parameters
    ----------
    dataset : pydicom.Dataset
        An image instance read with its pixel data.
    limits : PixelLimits
        The caps.

    Returns
    -------
    int
        The decoded size in bytes (:func:`decoded_size_bytes`).

    Raises
    ------
    SeriesLoadError
        If Rows, Columns, NumberOfFrames or the decoded size exceed the caps,
        if native pixel data are shorter or longer than announced, or if an
        encapsulated frame's codestream announces a larger image than the
        header (a decompression bomb).

    References
    ----------
    DICOM PS3.3 C.7.6.3; PS3.5 A.4; ITU-T T.81 B.2.2; ITU-T T.800 A.5.1.
    """
    sop_instance_uid = dataset.get("SOPInstanceUID", "?")
    rows = _int(dataset, "Rows", 0)
    columns = _int(dataset, "Columns", 0)
    frames = _int(dataset, "NumberOfFrames", 1) or 1
    if rows > limits.max_rows or columns > limits.max_columns:
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: {rows} x {columns} pixels exceed the limit "
            f"{limits.max_rows} x {limits.max_columns} (pixels.max_rows, max_columns)"
        )
    if frames > limits.max_frames:
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: {frames} frames exceed pixels.max_frames "
            f"({limits.max_frames})"
        )
    size = decoded_size_bytes(dataset)
    if size > limits.max_instance_bytes:
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: pixel data decode to {size} bytes, over "
            f"pixels.max_instance_bytes ({limits.max_instance_bytes})"
        )
    if "PixelData" not in dataset:
        return size
    syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    if not syntax.is_compressed:
        pixels = size // ((_int(dataset, "BitsAllocated", 16) + 7) // 8)
        expected = (pixels * _int(dataset, "BitsAllocated", 16) + 7) // 8  # 1-bit: packed
        length = len(dataset.PixelData)
        if length < expected or length > expected + 1:  # one pad byte for odd lengths
            raise SeriesLoadError(
                f"instance {sop_instance_uid}: native pixel data hold {length} bytes, the "
                f"header announces {expected}"
            )
        return size
    try:
        for index, frame in enumerate(_encapsulated_frames(dataset)):
            announced = codestream_size(frame)
            if announced is not None and (announced[0] > rows or announced[1] > columns):
                raise SeriesLoadError(
                    f"instance {sop_instance_uid}: frame {index + 1} codestream is "
                    f"{announced[0]} x {announced[1]}, the header says {rows} x {columns}"
                )
    except SeriesLoadError:
        raise
    except Exception as err:  # malformed encapsulation, any parser error
        raise SeriesLoadError(
            f"instance {sop_instance_uid}: encapsulated pixel data cannot be parsed ({err})"
        ) from err
    return size


def check_series_pixel_limits(datasets: Iterable[pydicom.Dataset], limits: PixelLimits) -> int:
    """Check every instance of a series (:func:`check_pixel_limits`) and their total size.

    Parameters
    ----------
    datasets : iterable of pydicom.Dataset
        The instances of one series.
    limits : PixelLimits
        The caps; ``max_series_bytes`` bounds the sum.

    Returns
    -------
    int
        Total decoded size in bytes.

    Raises
    ------
    SeriesLoadError
        If an instance or the total exceeds the caps.

    References
    ----------
    DICOM PS3.3 C.7.6.3 Image Pixel Module.
    """
    total = 0
    for dataset in datasets:
        total += check_pixel_limits(dataset, limits)
        if total > limits.max_series_bytes:
            raise SeriesLoadError(
                f"the series decodes to more than pixels.max_series_bytes "
                f"({limits.max_series_bytes} bytes)"
            )
    return total
