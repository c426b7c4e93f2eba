"""Series completeness: when has a series stopped arriving?

A series in RECEIVING becomes COMPLETE once no instance has arrived for
``stable_after_s`` seconds (Orthanc calls this "stable"). The basis of each
completion is stored in ``series.completion_basis``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import Instance, Series, SeriesState, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.series.selection import SeriesAttributes


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
        set_state(session, series, SeriesState.COMPLETE, reason=basis, now=now)
        series.completed_at = now
        series.completion_basis = basis
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
        slice_thickness_mm=series.slice_thickness_mm,
        sop_class_uids=frozenset(r[0] for r in rows),
        image_types=frozenset(image_types),
        slice_count=sum(r[2] for r in rows),
    )
