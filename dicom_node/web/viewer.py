"""Result viewer: a source slice and the same slice with the SEG outlined, as PNG.

The source instances are read from the spool, the mask from the job's SEG in
the outbox (highdicom ``segread`` and ``get_pixels_by_source_instance``, so
each mask frame is matched to its source instance by the SEG's own
references, never by file order). Slices are ordered by their position along
the slice normal. Images are rendered server-side with OpenCV; no patient
attribute is drawn.

References
----------
DICOM PS3.3 A.51 (Segmentation IOD), C.8.20 (Segmentation Image Module);
C.11.2.1.2 (Window Center and Window Width).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Instance, Job, Purge, ResultObject
from dicom_node.imaging.windowing import (
    BONE_WINDOW,
    BRAIN_WINDOW,
    SUBDURAL_WINDOW,
    Window,
    apply_window,
)

logger = logging.getLogger(__name__)

#: Display windows offered by the viewer.
WINDOWS: dict[str, Window] = {
    "brain": BRAIN_WINDOW,
    "subdural": SUBDURAL_WINDOW,
    "bone": BONE_WINDOW,
}
#: Outline colour of a segment whose finding has no recommended colour (BGR, OpenCV order).
OUTLINE_BGR = (40, 40, 230)


def segment_rgb(label: str) -> tuple[int, int, int]:
    """Display colour of a segment: its finding's recommended colour, as on the SC overlay.

    Parameters
    ----------
    label : str
        Segment Label of the SEG (the finding label).

    Returns
    -------
    tuple of int
        (R, G, B), 0-255; red when the finding is not in the code tables.

    References
    ----------
    PS3.3 C.8.20.2 (Recommended Display CIELab Value of a segment);
    :func:`dicom_node.results.codes.finding_codes`.
    """
    from dicom_node.errors import ResultBuildError
    from dicom_node.results.codes import finding_codes

    try:
        r, g, b = finding_codes(label).recommended_display_rgb
        return (int(r), int(g), int(b))
    except ResultBuildError:
        b, g, r = OUTLINE_BGR
        return (r, g, b)


class ViewerUnavailable(Exception):  # noqa: N818 - shown to the user, not a failure of the node
    """The job has nothing to view (no SEG, files purged, job unknown).

    Parameters
    ----------
    message : str
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class SliceInfo:
    """One source slice of a viewed series.

    Parameters
    ----------
    index : int
        Position in the ordered series (0-based, along the slice normal).
    sop_instance_uid : str
    path : pathlib.Path
        Absolute path in the spool.
    position_mm : float
        Position along the slice normal in mm.
    mask_pixels : int
        Pixels of the mask in this slice.
    mask_area_mm2 : float
        The same in mm² (PixelSpacing).
    """

    index: int
    sop_instance_uid: str
    path: Path
    position_mm: float
    mask_pixels: int = 0
    mask_area_mm2: float = 0.0


@dataclass
class JobImages:
    """Everything the viewer needs of one job, loaded once and cached.

    Parameters
    ----------
    job_id : int
    seg_sop_instance_uid : str
    slices : list of SliceInfo
        Ordered along the slice normal.
    label_map : numpy.ndarray
        Shape (slices, rows, columns), uint8: 0 outside every segment, else
        the 1-based position in ``segment_labels`` of the first segment that
        holds the pixel.
    segment_labels : list of str
    """

    job_id: int
    seg_sop_instance_uid: str
    slices: list[SliceInfo]
    label_map: np.ndarray
    segment_labels: list[str]

    @property
    def masks(self) -> np.ndarray:
        """(slices, rows, columns) bool: the union of the SEG's segments."""
        return self.label_map > 0

    @property
    def legend(self) -> list[tuple[str, str]]:
        """(segment label, CSS colour ``#rrggbb``) for each segment, in SEG order."""
        out = []
        for label in self.segment_labels:
            r, g, b = segment_rgb(label)
            out.append((label, f"#{r:02x}{g:02x}{b:02x}"))
        return out

    @property
    def best_index(self) -> int:
        """The slice with the largest mask area, or the middle slice when the mask is empty."""
        areas = [s.mask_pixels for s in self.slices]
        if max(areas, default=0) == 0:
            return len(self.slices) // 2
        return int(np.argmax(areas))


def _order_slices(paths: list[tuple[str, Path]]) -> list[SliceInfo]:
    infos = []
    for sop_instance_uid, path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = ds.get("ImageOrientationPatient")
        ipp = ds.get("ImagePositionPatient")
        if iop is not None and ipp is not None and len(iop) == 6:
            normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
            position = float(np.dot(normal, np.asarray(ipp, float)))
        else:
            position = float(ds.get("InstanceNumber") or 0)
        infos.append(SliceInfo(0, sop_instance_uid, path, position))
    infos.sort(key=lambda s: s.position_mm)
    for index, info in enumerate(infos):
        info.index = index
    return infos


class SliceRenderer:
    """Loads a job's source slices and SEG (cached per job) and renders PNG slices.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
    spool_path, outbox_path : pathlib.Path
        Absolute spool and outbox directories.
    cache_size : int
        Jobs kept in memory (masks of a 40-slice 512x512 series take ~10 MB).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        spool_path: Path,
        outbox_path: Path,
        cache_size: int = 4,
    ) -> None:
        self.session_factory = session_factory
        self.spool_path = spool_path
        self.outbox_path = outbox_path
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, str], JobImages] = OrderedDict()
        self._lock = Lock()

    def job_images(self, job_id: int) -> JobImages:
        """Return the ordered slices and masks of a job's latest SEG.

        Raises
        ------
        ViewerUnavailable
            If the job does not exist, has no SEG, or its files were purged.
        """
        with self.session_factory() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise ViewerUnavailable(f"no job {job_id}")
            purge = session.scalar(select(Purge).where(Purge.series_id == job.series_id))
            if purge is not None:
                raise ViewerUnavailable(
                    f"the files of this series were purged on {purge.purged_at:%Y-%m-%d %H:%M} UTC"
                )
            seg_row = session.scalar(
                select(ResultObject)
                .where(ResultObject.job_id == job_id, ResultObject.kind == "SEG")
                .order_by(ResultObject.id.desc())
                .limit(1)
            )
            if seg_row is None:
                raise ViewerUnavailable("this job has no segmentation to show")
            sources = session.execute(
                select(Instance.sop_instance_uid, Instance.path).where(
                    Instance.series_id == job.series_id
                )
            ).all()
        key = (job_id, seg_row.sop_instance_uid)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        images = self._load(job_id, seg_row, sources)
        with self._lock:
            self._cache[key] = images
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return images

    def _load(self, job_id: int, seg_row: ResultObject, sources) -> JobImages:
        try:
            seg = hd.seg.segread(self.outbox_path / seg_row.path)
            slices = _order_slices([(uid, self.spool_path / p) for uid, p in sources])
        except (OSError, InvalidDicomError) as err:
            raise ViewerUnavailable(f"cannot read the images of job {job_id}: {err}") from err
        referenced = {
            item.ReferencedSOPInstanceUID
            for series in seg.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence
        }
        segment_numbers = list(seg.segment_numbers)
        first = pydicom.dcmread(slices[0].path, stop_before_pixels=True)
        label_map = np.zeros((len(slices), int(first.Rows), int(first.Columns)), dtype=np.uint8)
        uids = [s.sop_instance_uid for s in slices if s.sop_instance_uid in referenced]
        if uids:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids,
                segment_numbers=segment_numbers,
                assert_missing_frames_are_empty=True,
            )
            # First segment wins where segments overlap (a BINARY SEG may overlap).
            present = pixels > 0
            labels_of = np.where(present.any(axis=-1), np.argmax(present, axis=-1) + 1, 0)
            by_uid = dict(zip(uids, labels_of.astype(np.uint8), strict=True))
            for s in slices:
                if s.sop_instance_uid in by_uid:
                    label_map[s.index] = by_uid[s.sop_instance_uid]
        masks = label_map > 0
        spacing = first.get("PixelSpacing") or [1.0, 1.0]
        pixel_area_mm2 = float(spacing[0]) * float(spacing[1])
        for s in slices:
            s.mask_pixels = int(masks[s.index].sum())
            s.mask_area_mm2 = s.mask_pixels * pixel_area_mm2
        labels = [seg.get_segment_description(n).segment_label for n in segment_numbers]
        return JobImages(job_id, seg_row.sop_instance_uid, slices, label_map, labels)

    def render(self, job_id: int, index: int, *, overlay: bool, window: str = "brain") -> bytes:
        """Render one slice as PNG bytes.

        Parameters
        ----------
        job_id : int
            The job whose latest SEG is shown.
        index : int
            Slice index along the normal (0-based).
        overlay : bool
            Outline each segment in its finding's colour (:func:`segment_rgb`)
            and tint it lightly when True.
        window : str
            A key of :data:`WINDOWS`.

        Returns
        -------
        bytes
            A PNG, the slice's own size (rows x columns).

        Raises
        ------
        ViewerUnavailable
            If the job cannot be viewed.
        IndexError
            If ``index`` is outside the series.
        KeyError
            If ``window`` is unknown.
        """
        images = self.job_images(job_id)
        if not 0 <= index < len(images.slices):
            raise IndexError(f"slice {index} outside 0..{len(images.slices) - 1}")
        info = images.slices[index]
        ds = pydicom.dcmread(info.path)
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        grey = apply_window(hu, WINDOWS[window])
        image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        if overlay:
            labels = images.label_map[index]
            if labels.shape == grey.shape and labels.any():
                tint = image.copy()
                colours = {}
                for number, label in enumerate(images.segment_labels, start=1):
                    r, g, b = segment_rgb(label)
                    colours[number] = (b, g, r)
                    tint[labels == number] = colours[number]
                image = cv2.addWeighted(tint, 0.25, image, 0.75, 0)
                for number, bgr in colours.items():
                    mask = (labels == number).astype(np.uint8)
                    if not mask.any():
                        continue
                    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                    cv2.drawContours(image, contours, -1, bgr, thickness=1, lineType=cv2.LINE_AA)
        ok, encoded = cv2.imencode(".png", image)
        if not ok:  # pragma: no cover - OpenCV fails only on invalid input
            raise ViewerUnavailable("could not encode the slice as PNG")
        return encoded.tobytes()
