"""Series completeness: when has a series stopped arriving?

Two ways, and the basis of each completion is stored in ``series.completion_basis``:

* **Proof** (:func:`mark_proven_series_complete`), as soon as the data shows
  it. Every association that carried the series was released normally (not
  aborted) at least ``release_grace_s`` ago, no association of the same
  sender is open without having stored anything yet (a sender that opens one
  association per instance is between two of them), and either

  - the instance count is proven: one multi-frame instance, or as many
    instances as their common ImagesInAcquisition (0020,1002); or
  - the geometry is proven: the slice positions along the normal form a
    contiguous, evenly spaced stack of at least :data:`MIN_STACK_SLICES`
    slices. Uneven stacks (the GE head: 4 mm steps then 7 mm steps) prove
    nothing and wait for the quiet time.

  A series still carried by an open association is never completed, so one
  sent over several concurrent or back-to-back associations is not split.
  By default only a series carried by **one** association is proven early;
  one carried by several waits for the quiet time, because a router that
  forwards one instance per association can pause mid-series for longer than
  any grace time (``series.early_completion_across_associations`` turns proof
  across associations on for senders known to send without pauses).
* **Quiet time** (:func:`mark_stable_series_complete`): no instance for
  ``stable_after_s`` seconds (Orthanc calls this "stable").

With proof across associations turned on, what no rule can see is a sender
that pauses longer than ``release_grace_s`` between two associations of one
series while the first part alone is an even stack (or matches
ImagesInAcquisition, as one rotation of a sequential scan can): that series
is completed early and its late instances re-open it, so it is analysed twice
(the second result version then names the first as superseded, see
:mod:`dicom_node.results.versioning`). See docs/performance.md.

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (slice positions along the normal);
PS3.3 C.7.6.1 General Image Module (ImagesInAcquisition); PS3.3 C.7.6.6
Multi-frame Module (NumberOfFrames); PS3.8 section 7 (association release).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    Association,
    AssociationOutcome,
    Instance,
    Series,
    SeriesState,
    utcnow,
)
from dicom_node.db.transitions import set_state
from dicom_node.series.selection import SeriesAttributes

logger = logging.getLogger(__name__)

#: Fewest slices whose geometry can prove a complete stack.
MIN_STACK_SLICES = 3
#: Every slice step must lie within this fraction of the median step ...
EVEN_STEP_RELATIVE_TOLERANCE = 0.01
#: ... or within this many mm of it (positions are rounded in the headers).
EVEN_STEP_ABSOLUTE_TOLERANCE_MM = 0.005
#: Two slices closer than this along the normal are at the same position (mm).
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class StackEvidence:
    """Whether slice positions prove a contiguous, evenly spaced stack.

    Parameters
    ----------
    proven : bool
        True when the positions form such a stack.
    reason : str
        The evidence ("28 slices, even 5.000 mm steps") or why not.
    """

    proven: bool
    reason: str


def stack_evidence(positions_mm: Sequence[float | None]) -> StackEvidence:
    """Decide whether slice positions along the normal form a contiguous, evenly spaced stack.

    Parameters
    ----------
    positions_mm : sequence of float or None
        Position of each instance along the series' slice normal in mm, in
        any order; None for an instance without usable geometry.

    Returns
    -------
    StackEvidence
        Proven when there are at least :data:`MIN_STACK_SLICES` positions,
        none missing, no two at the same place, and every step between
        neighbours is within 1 % (or 0.005 mm) of the median step. A missing
        slice inside the stack doubles one step, so it is never proven.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    if any(p is None for p in positions_mm):
        missing = sum(p is None for p in positions_mm)
        return StackEvidence(False, f"{missing} instance(s) without a position on the normal")
    if len(positions_mm) < MIN_STACK_SLICES:
        return StackEvidence(False, f"{len(positions_mm)} slice(s), fewer than {MIN_STACK_SLICES}")
    ordered = sorted(float(p) for p in positions_mm)  # type: ignore[arg-type]
    steps = [b - a for a, b in pairwise(ordered)]
    if min(steps) < DUPLICATE_POSITION_TOLERANCE_MM:
        return StackEvidence(False, "two slices at the same position")
    step = statistics.median(steps)
    tolerance = max(EVEN_STEP_RELATIVE_TOLERANCE * step, EVEN_STEP_ABSOLUTE_TOLERANCE_MM)
    worst = max(abs(s - step) for s in steps)
    if worst > tolerance:
        return StackEvidence(
            False,
            f"uneven steps: {min(steps):.3f} to {max(steps):.3f} mm around {step:.3f} mm",
        )
    return StackEvidence(True, f"{len(ordered)} slices, even {step:.3f} mm steps")


def count_evidence(
    images_in_acquisition: Sequence[int | None], number_of_frames: Sequence[int]
) -> str | None:
    """Return the basis if the instance count proves the series complete, else None.

    Parameters
    ----------
    images_in_acquisition : sequence of int or None
        ImagesInAcquisition of each instance (None where absent).
    number_of_frames : sequence of int
        NumberOfFrames of each instance (1 for single-frame).

    Returns
    -------
    str or None
        ``"multi-frame: ..."`` for one multi-frame instance, ``"ImagesInAcquisition:
        ..."`` when every instance states the same count and that many are
        here, otherwise None.

    References
    ----------
    DICOM PS3.3 C.7.6.1 General Image Module; PS3.3 C.7.6.6 Multi-frame Module.
    """
    count = len(number_of_frames)
    if count == 1 and number_of_frames[0] > 1:
        return f"multi-frame: one instance with {number_of_frames[0]} frames"
    values = set(images_in_acquisition)
    if len(values) == 1 and None not in values and all(n == 1 for n in number_of_frames):
        (expected,) = values
        if expected == count:
            return f"ImagesInAcquisition: {count} of {expected} instances received"
    return None


def _complete(session: Session, series: Series, basis: str, now: datetime) -> None:
    set_state(session, series, SeriesState.COMPLETE, reason=basis, now=now)
    series.completed_at = now
    series.completion_basis = basis


def mark_proven_series_complete(
    session: Session,
    *,
    release_grace_s: float,
    across_associations: bool = False,
    now: datetime | None = None,
) -> list[Series]:
    """Mark RECEIVING series COMPLETE whose instances prove them complete.

    See the module docstring for the rules.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    release_grace_s : float
        Seconds after the last carrying association was released before a
        proof counts (a sender that continues a series in a new association
        opens it within this time).
    across_associations : bool
        Also prove series carried by more than one association. False (the
        default) leaves those to the quiet time: a router that forwards one
        instance per association (Orthanc, many PACS) can pause longer than
        any grace time in the middle of a series whose first part is already
        an even stack.
    now : datetime or None
        Current time (UTC).

    Returns
    -------
    list of Series
        The series completed by this call.
    """
    now = now or utcnow()
    completed = []
    receiving = session.scalars(
        select(Series).where(Series.state == SeriesState.RECEIVING).order_by(Series.id)
    ).all()
    for series in receiving:
        rows = session.execute(
            select(
                Instance.association_id,
                Instance.slice_position_mm,
                Instance.images_in_acquisition,
                Instance.number_of_frames,
            ).where(Instance.series_id == series.id)
        ).all()
        if not rows or any(r.association_id is None for r in rows):
            continue  # carried by an untracked association: only the quiet time knows
        carriers = session.scalars(
            select(Association).where(Association.id.in_({r.association_id for r in rows}))
        ).all()
        closed_at = [c.closed_at for c in carriers if c.closed_at is not None]
        if len(closed_at) < len(carriers):
            continue  # still being received
        if len(carriers) > 1 and not across_associations:
            continue  # several associations: only the quiet time knows the sender is done
        if not all(c.outcome == AssociationOutcome.RELEASED for c in carriers):
            continue  # an aborted or broken transfer is likely to be resent
        last_closed = max(closed_at)
        if now - last_closed < timedelta(seconds=release_grace_s):
            continue
        senders = {c.calling_ae_title for c in carriers}
        has_instance = exists().where(Instance.association_id == Association.id)
        waiting = session.scalar(
            select(Association.id)
            .where(
                Association.closed_at.is_(None),
                Association.calling_ae_title.in_(senders),
                ~has_instance,
            )
            .limit(1)
        )
        if waiting is not None:
            continue  # the same sender has a new association open: it may carry more
        basis = count_evidence(
            [r.images_in_acquisition for r in rows], [r.number_of_frames for r in rows]
        )
        if basis is None:
            stack = stack_evidence([r.slice_position_mm for r in rows])
            if not stack.proven:
                logger.debug(
                    "series %s not proven complete: %s", series.series_instance_uid, stack.reason
                )
                continue
            basis = f"geometry: {stack.reason}"
        basis += (
            f"; {len(carriers)} association(s) released, the last "
            f"{(now - last_closed).total_seconds():.1f} s ago"
        )
        _complete(session, series, basis, now)
        logger.info("series %s complete: %s", series.series_instance_uid, basis)
        completed.append(series)
    return completed


def mark_stable_series_complete(
    session: Session, stable_after_s: float, now: datetime | None = None
) -> list[Series]:
    """Mark every RECEIVING series quiet for ``stable_after_s`` seconds as COMPLETE.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    stable_after_s : float
        Quiet time in seconds.
    now : datetime or None
        Current time (UTC).

    Returns
    -------
    list of Series
        The series completed by this call.
    """
    now = now or utcnow()
    limit = now - timedelta(seconds=stable_after_s)
    quiet = session.scalars(
        select(Series).where(
            Series.state == SeriesState.RECEIVING, Series.last_instance_at <= limit
        )
    ).all()
    for series in quiet:
        quiet_s = (now - series.last_instance_at).total_seconds()
        basis = f"quiet time: no new instance for {quiet_s:.1f} s (stable_after_s={stable_after_s})"
        _complete(session, series, basis, now)
    return list(quiet)


def series_attributes(session: Session, series: Series) -> SeriesAttributes:
    """Gather the attributes selection rules look at, from the DB rows (no file is read).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session.
    series : Series
        A series row; its instance rows are read.

    Returns
    -------
    SeriesAttributes
    """
    rows = session.execute(
        select(Instance.sop_class_uid, Instance.image_type, Instance.number_of_frames).where(
            Instance.series_id == series.id
        )
    ).all()
    image_types: set[str] = set()
    for _, image_type, _ in rows:
        image_types.update(v.strip().upper() for v in image_type.split("\\") if v.strip())
    iop = series.image_orientation_patient
    return SeriesAttributes(
        modality=series.modality,
        body_part_examined=series.body_part_examined,
        study_description=series.study_description,
        series_description=series.series_description,
        protocol_name=series.protocol_name,
        contrast_bolus_agent=series.contrast_bolus_agent,
        image_orientation_patient=tuple(iop) if iop else None,
        slice_count=sum(r[2] for r in rows),
        slice_thickness_mm=series.slice_thickness_mm,
        sop_class_uids=frozenset(r[0] for r in rows),
        image_types=frozenset(image_types),
    )
