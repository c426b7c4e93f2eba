"""Per-destination result profiles: which objects a destination receives, and how encoded.

A PACS or viewer that shows DICOM SEG gets the SEG (BINARY or LABELMAP,
compressed if it can decode it, split when it refuses large multi-frame
objects); one that cannot show SEG gets the Secondary Capture overlay series
instead; each may or may not want the TID 1500 SR. A profile says exactly
that, and a destination receives exactly the objects its profile names.

The worker builds the union of the objects the configured destinations need
(one SEG per distinct SEG encoding, one SR per SEG it references, one overlay
series) and creates deliveries per destination for the objects its profile
names (see :func:`dicom_node.results.builder.build_results_for_profiles`).

Known receiver limits behind the options:

* ``max_frames``: Weasis refuses SEG objects with more than 400 frames; a SEG
  above the limit is split into several instances of one series, each with at
  most ``max_frames`` frames (0 = no limit).
* ``empty_frames = "omit"``: smaller objects; but some viewers (OHIF versions
  before 3.7) misplace SEGs whose frames do not cover every source slice, so
  ``"keep"`` is the default.
* ``compression``: the SCU can only send a transfer syntax the receiver
  accepts, so compression is an opt-in per destination. highdicom encodes a
  BINARY SEG uncompressed or as JPEG 2000 Lossless; a LABELMAP SEG also as
  RLE Lossless.

References
----------
PS3.3 A.51 Segmentation IOD, shared by the Segmentation and Label Map
Segmentation Storage SOP Classes (Supplement 243); PS3.5 Annex A (transfer
syntaxes); PS3.4 B.5 (Storage SOP Classes); IHE Radiology AI Results (AIR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

#: Name of the profile a destination uses when it names none.
DEFAULT_PROFILE_NAME = "default"

#: Compression keyword -> Transfer Syntax UID of the SEG.
COMPRESSION_TRANSFER_SYNTAXES: dict[str, UID] = {
    "none": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "rle-lossless": RLELossless,
}

#: Compressions highdicom can encode, per Segmentation Type.
SUPPORTED_COMPRESSIONS: dict[str, frozenset[str]] = {
    "BINARY": frozenset({"none", "jpeg2000-lossless"}),
    "LABELMAP": frozenset({"none", "jpeg2000-lossless", "rle-lossless"}),
}


@dataclass(frozen=True)
class SegEncoding:
    """How one SEG variant is encoded; hashable, so equal profiles share one SEG.

    Parameters
    ----------
    segmentation_type : {"BINARY", "LABELMAP"}
        Segmentation Type (0062,0001); LABELMAP uses the Label Map
        Segmentation Storage SOP Class.
    transfer_syntax_uid : str
        Transfer Syntax UID of the object.
    max_frames : int
        Largest Number of Frames of one instance; 0 = no limit.
    omit_empty_frames : bool
        Leave out frames without segmented pixels.
    grid : {"source", "regular"}
        Frames on the source images, or resampled onto a regular grid
        (:mod:`dicom_node.results.seg_grid`).

    References
    ----------
    PS3.3 C.8.20.1 Segmentation Image Module (Segmentation Type).
    """

    segmentation_type: str = "BINARY"
    transfer_syntax_uid: str = str(ExplicitVRLittleEndian)
    max_frames: int = 0
    omit_empty_frames: bool = False
    grid: str = "source"

    @property
    def key(self) -> str:
        """str: A short stable text naming the variant (for logs and summaries)."""
        ts = UID(self.transfer_syntax_uid).keyword or self.transfer_syntax_uid
        frames = f"max{self.max_frames}" if self.max_frames else "nomax"
        empty = "omit" if self.omit_empty_frames else "keep"
        grid = "" if self.grid == "source" else f"/{self.grid}"
        return f"{self.segmentation_type}/{ts}/{frames}/{empty}{grid}"


class ResultProfile(BaseModel):
    """The result objects one destination receives and their encoding.

    Parameters
    ----------
    seg_type : {"BINARY", "LABELMAP"}
        Segmentation Type of the SEG.
    compression : {"none", "jpeg2000-lossless", "rle-lossless"}
        Transfer syntax of the SEG; only what the receiver accepts. RLE needs
        LABELMAP.
    max_frames : int
        Largest number of frames per SEG instance (0 = no limit); larger SEGs
        are split into several instances of one series.
    empty_frames : {"keep", "omit"}
        Keep frames without segmented pixels (safe for every viewer) or omit them.
    seg_grid : {"source", "regular"}
        ``"source"`` (default): one SEG frame per CT image, at its position,
        what OHIF/Cornerstone, Weasis and highdicom overlay on the CT.
        ``"regular"``: frames resampled onto an evenly spaced grid
        perpendicular to the image plane, for readers that rebuild one
        regular volume and refuse a tilted or unevenly spaced series (dcmqi,
        hence 3D Slicer); one instance (``max_frames`` 0).
    send_seg : bool
        Send the SEG. When False and ``send_sr`` is True, the SR still
        references the SEG built for this profile (kept in the outbox).
    send_sr : bool
        Send the TID 1500 SR (and the "not analysable" report).
    send_overlay : bool
        Send the Secondary Capture overlay series (viewers without SEG).

    Raises
    ------
    pydantic.ValidationError
        If the compression is not available for the Segmentation Type, or the
        profile sends nothing.

    References
    ----------
    PS3.3 A.51 Segmentation IOD; PS3.3 A.8 Secondary Capture Image IOD;
    PS3.16 TID 1500.
    """

    model_config = ConfigDict(extra="forbid")

    seg_type: Literal["BINARY", "LABELMAP"] = "BINARY"
    compression: Literal["none", "jpeg2000-lossless", "rle-lossless"] = "none"
    max_frames: int = Field(0, ge=0)
    empty_frames: Literal["keep", "omit"] = "keep"
    seg_grid: Literal["source", "regular"] = "source"
    send_seg: bool = True
    send_sr: bool = True
    send_overlay: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ResultProfile:
        if self.compression not in SUPPORTED_COMPRESSIONS[self.seg_type]:
            allowed = ", ".join(sorted(SUPPORTED_COMPRESSIONS[self.seg_type]))
            raise ValueError(
                f"compression {self.compression!r} is not available for {self.seg_type} "
                f"segmentations (allowed: {allowed})"
            )
        if self.seg_grid == "regular" and self.max_frames:
            raise ValueError("seg_grid 'regular' makes one SEG instance: max_frames must be 0")
        if not (self.send_seg or self.send_sr or self.send_overlay):
            raise ValueError("profile sends nothing: enable send_seg, send_sr or send_overlay")
        return self

    @property
    def seg_encoding(self) -> SegEncoding:
        """SegEncoding: The SEG variant this profile asks for."""
        return SegEncoding(
            segmentation_type=self.seg_type,
            transfer_syntax_uid=str(COMPRESSION_TRANSFER_SYNTAXES[self.compression]),
            max_frames=self.max_frames,
            omit_empty_frames=self.empty_frames == "omit",
            grid=self.seg_grid,
        )


def default_profiles() -> dict[str, ResultProfile]:
    """Return the built-in profiles: ``default`` (BINARY SEG, all frames, SR, no overlay).

    Returns
    -------
    dict of str to ResultProfile
    """
    return {DEFAULT_PROFILE_NAME: ResultProfile()}


def resolve_profiles(
    destination_profiles: dict[str, str], profiles: dict[str, ResultProfile]
) -> dict[str, ResultProfile]:
    """Map destination names to their profiles.

    Parameters
    ----------
    destination_profiles : dict of str to str
        Destination name -> profile name.
    profiles : dict of str to ResultProfile
        The configured profiles.

    Returns
    -------
    dict of str to ResultProfile
        Destination name -> profile, in the order given.

    Raises
    ------
    KeyError
        If a destination names a profile that is not configured (settings
        validation prevents this at start-up).
    """
    return {name: profiles[profile] for name, profile in destination_profiles.items()}
