"""Test helper: job-database rows for one result object waiting for delivery."""

from __future__ import annotations

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from dicom_node.db.models import Delivery, Job, ResultObject, Series, Study


def add_result_with_deliveries(
    session: Session,
    ds: Dataset,
    destinations: tuple[str, ...] = ("pacs",),
    *,
    path: str = "obj.dcm",
    size_bytes: int = 1,
) -> tuple[ResultObject, list[Delivery]]:
    """Add a study, series and job, one result object for ``ds`` and a PENDING delivery each."""
    study = Study(study_instance_uid="1.2.3")
    session.add(study)
    session.flush()
    series = Series(study_id=study.id, series_instance_uid="1.2.3.4")
    session.add(series)
    session.flush()
    job = Job(series_id=series.id, pipeline="ich", instance_set_digest="x")
    session.add(job)
    session.flush()
    obj = ResultObject(
        job_id=job.id,
        kind="SEG",
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid="1.2.3.5",
        study_instance_uid="1.2.3",
        path=path,
        size_bytes=size_bytes,
    )
    session.add(obj)
    session.flush()
    deliveries = [Delivery(result_object_id=obj.id, destination=name) for name in destinations]
    session.add_all(deliveries)
    session.flush()
    return obj, deliveries
