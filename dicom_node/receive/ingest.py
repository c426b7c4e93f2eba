"""Ingest: one received instance -> one durable spool file and one DB row."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Instance, Series, SeriesState, Study, utcnow
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.receive.header import InstanceHeader
from dicom_node.receive.spool import Spool

logger = logging.getLogger(__name__)


class InstanceIngest:
    """Stores received instances: spool file first (durable), then the DB rows.

    Parameters
    ----------
    spool : Spool
        Where the bytes go.
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    """

    def __init__(self, spool: Spool, session_factory: sessionmaker[Session]) -> None:
        self.spool = spool
        self.session_factory = session_factory

    def is_stored(self, sop_instance_uid: str) -> bool:
        """Return True if an instance with this SOPInstanceUID is already recorded."""
        with self.session_factory() as session:
            found = session.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            )
        return found is not None

    def store(self, header: InstanceHeader, encoded: bytes, calling_ae_title: str) -> bool:
        """Store one instance durably and record it.

        Parameters
        ----------
        header : InstanceHeader
            Parsed, validated header of the instance.
        encoded : bytes
            The Part 10 bytes to store unchanged.
        calling_ae_title : str
            Calling AE title of the association that carried it.

        Returns
        -------
        bool
            True if stored now, False if an instance with the same
            SOPInstanceUID was already stored (it is not stored twice).

        Raises
        ------
        SpoolWriteError
            If the file cannot be written (disk full, permissions).
        SQLAlchemyError
            If the database cannot record the row.
        """
        if self.is_stored(header.sop_instance_uid):
            logger.info("instance %s already stored, not stored again", header.sop_instance_uid)
            return False
        relative = self.spool.relative_path(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        self.spool.write(relative, encoded)
        return self.record(header, str(relative), len(encoded), calling_ae_title)

    def record(
        self, header: InstanceHeader, relative: str, size_bytes: int, calling_ae_title: str
    ) -> bool:
        """Record an instance whose file is already durable in the spool.

        Used by :meth:`store` and by start-up recovery for spool files that
        have no row (the node stopped between the write and the commit).

        Parameters
        ----------
        header : InstanceHeader
            Parsed header of the stored file.
        relative : str
            Its spool-relative path.
        size_bytes : int
            Its size.
        calling_ae_title : str
            Who sent it.

        Returns
        -------
        bool
            True if a row was added, False if the SOP instance was already recorded.

        Raises
        ------
        SQLAlchemyError
            If the database cannot record the row.
        """
        try:
            with self.session_factory.begin() as session:
                self._record(session, header, relative, size_bytes, calling_ae_title)
        except IntegrityError:
            # Another association (or an earlier run) recorded the same SOP instance.
            logger.info("instance %s already recorded", header.sop_instance_uid)
            return False
        return True

    def _record(
        self,
        session: Session,
        header: InstanceHeader,
        relative: str,
        size_bytes: int,
        calling_ae_title: str,
    ) -> None:
        now = utcnow()
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == header.study_instance_uid)
        )
        if study is None:
            study = Study(study_instance_uid=header.study_instance_uid, created_at=now)
            session.add(study)
            session.flush()
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == header.series_instance_uid)
        )
        if series is None:
            series = self._new_series(study, header, calling_ae_title, now)
            session.add(series)
            session.flush()
            log_initial_state(session, series, now=now)
        elif series.state != SeriesState.RECEIVING:
            self._reopen(session, series, now)
        series.instance_count += 1
        series.last_instance_at = now
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=header.sop_instance_uid,
                sop_class_uid=header.sop_class_uid,
                transfer_syntax_uid=header.transfer_syntax_uid,
                instance_number=header.instance_number,
                image_type=header.image_type,
                number_of_frames=header.number_of_frames,
                path=relative,
                size_bytes=size_bytes,
                calling_ae_title=calling_ae_title,
                received_at=now,
            )
        )

    @staticmethod
    def _new_series(
        study: Study, header: InstanceHeader, calling_ae_title: str, now: datetime
    ) -> Series:
        return Series(
            study_id=study.id,
            series_instance_uid=header.series_instance_uid,
            modality=header.modality[:16],
            body_part_examined=header.body_part_examined[:64],
            study_description=header.study_description[:128],
            series_description=header.series_description[:128],
            protocol_name=header.protocol_name[:128],
            contrast_bolus_agent=header.contrast_bolus_agent,
            image_orientation_patient=(
                list(header.image_orientation_patient) if header.image_orientation_patient else None
            ),
            slice_thickness_mm=header.slice_thickness_mm,
            frame_of_reference_uid=header.frame_of_reference_uid,
            calling_ae_title=calling_ae_title,
            instance_count=0,
            state=SeriesState.RECEIVING,
            first_instance_at=now,
            last_instance_at=now,
        )

    @staticmethod
    def _reopen(session: Session, series: Series, now: datetime) -> None:
        reason = f"new instance after {series.state}"
        set_state(session, series, SeriesState.RECEIVING, reason=reason, now=now)
        series.completed_at = None
        series.completion_basis = None
