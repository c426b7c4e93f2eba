"""Ingest: one received instance -> one durable spool file and one DB row.

The spool file is written durably first (fsync, rename, fsync of the
directory); then one short transaction records the row. Both happen before
the C-STORE response, so an acknowledged instance is on disk and in the
database.

The common case, a further instance of a series that is still RECEIVING, is
one ``UPDATE series`` and one ``INSERT instance`` through pre-built Core
statements on a bare connection (no ORM session), with the series id cached
per process. Anything else (a new
study or series, a series to re-open, a cache miss) takes the ORM path,
which also logs the state change. A re-sent instance is recognised by its
spool file and confirmed in the database before anything is written.

References
----------
DICOM PS3.4 B.2.3 (C-STORE statuses: success only once stored);
PS3.3 C.7.6.2 Image Plane Module (slice positions recorded for completeness).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Engine, Table, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Instance, Series, SeriesState, Study, utcnow
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.errors import InvalidInstanceError
from dicom_node.receive.header import InstanceHeader, position_along_normal, same_orientation
from dicom_node.receive.spool import Spool

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Series ids remembered per process for the fast path.
SERIES_CACHE_SIZE = 1024

_series = cast(Table, Series.__table__)  # a declarative model's table is a Table
_BUMP_SERIES = (
    _series.update()
    .where(
        _series.c.id == bindparam("b_series_id"),
        _series.c.series_instance_uid == bindparam("b_series_uid"),
        _series.c.state == SeriesState.RECEIVING,
    )
    .values(
        instance_count=_series.c.instance_count + 1,
        last_instance_at=bindparam("b_now", type_=_series.c.last_instance_at.type),
        updated_at=bindparam("b_now", type_=_series.c.updated_at.type),
    )
)
_INSERT_INSTANCE = cast(Table, Instance.__table__).insert()


@dataclass(frozen=True)
class _SeriesKey:
    series_id: int
    orientation: tuple[float, ...] | None
    study_instance_uid: str = ""


def _other_study_message(header: InstanceHeader, known_study_uid: str) -> str:
    return (
        f"series UID already belongs to another study (rule PS3.3 C.7.3.1: a series is "
        f"part of one study): series {header.series_instance_uid} is in study "
        f"{known_study_uid}, not {header.study_instance_uid}"
    )


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
        self._series_keys: OrderedDict[str, _SeriesKey] = OrderedDict()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._lock_fd: int | None = None
        # The fast path runs on a bare connection of the sessions' engine (no ORM session).
        bind = session_factory.kw.get("bind")
        self._engine: Engine | None = bind if isinstance(bind, Engine) else None

    def is_stored(self, sop_instance_uid: str) -> bool:
        """Return True if an instance with this SOPInstanceUID is already recorded."""
        with self.session_factory() as session:
            found = session.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            )
        return found is not None

    def store(
        self,
        header: InstanceHeader,
        encoded: bytes,
        calling_ae_title: str,
        *,
        association_id: int | None = None,
    ) -> bool:
        """Store one instance durably and record it.

        Parameters
        ----------
        header : InstanceHeader
            Parsed, validated header of the instance.
        encoded : bytes
            The Part 10 bytes to store unchanged.
        calling_ae_title : str
            Calling AE title of the association that carried it.
        association_id : int or None
            Row id of that association (see :class:`AssociationLog`), or None
            when not tracked.

        Returns
        -------
        bool
            True if stored now, False if an instance with the same
            SOPInstanceUID was already stored (it is not stored twice).

        Raises
        ------
        SpoolWriteError
            If the file cannot be written (disk full, permissions).
        InvalidUIDError
            If a UID cannot form a spool path.
        SQLAlchemyError
            If the database cannot record the row.
        InvalidInstanceError
            If its SeriesInstanceUID already belongs to a series of another
            study (nothing is stored).
        """
        self._check_series_in_one_study(header)
        relative = self.spool.relative_path(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        # The spool file is the durable record: no file, no earlier copy (the database is
        # asked only when a file exists, i.e. for re-sent instances).
        if self.spool.absolute(relative).exists() and self.is_stored(header.sop_instance_uid):
            logger.info("instance %s already stored, not stored again", header.sop_instance_uid)
            return False
        self.spool.write(relative, encoded)
        try:
            recorded = self.record(
                header,
                str(relative),
                len(encoded),
                calling_ae_title,
                association_id=association_id,
            )
        except InvalidInstanceError:
            self.spool.absolute(relative).unlink(missing_ok=True)
            raise
        if not recorded:
            self._drop_if_not_recorded(header.sop_instance_uid, relative)
        return recorded

    def _check_series_in_one_study(self, header: InstanceHeader) -> None:
        """Refuse an instance whose series UID is already a series of another study.

        A series belongs to one study (PS3.3 C.7.3.1); two studies that share a
        Series Instance UID would be analysed as one mixed volume.
        """
        key = self._cached(header.series_instance_uid)
        known: str | None
        if key is not None and key.study_instance_uid:
            known = key.study_instance_uid
        else:
            with self.session_factory() as session:
                known = session.scalar(
                    select(Study.study_instance_uid)
                    .join(Series)
                    .where(Series.series_instance_uid == header.series_instance_uid)
                )
        if known is not None and known != header.study_instance_uid:
            raise InvalidInstanceError(_other_study_message(header, known))

    def _drop_if_not_recorded(self, sop_instance_uid: str, relative) -> None:
        """Remove a file just written whose SOP instance is recorded at another path.

        The same SOPInstanceUID sent with other Study or Series UIDs lands at
        another spool path; the first copy stays the record, and the new file
        would be an unrecorded orphan (recorded as a second copy at the next
        start-up recovery).
        """
        with self.session_factory() as session:
            path = session.scalar(
                select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
            )
        if path is not None and path != str(relative):
            logger.warning(
                "instance %s already stored in another study or series (%s): the new copy "
                "is not kept",
                sop_instance_uid,
                path.rsplit("/", 1)[0],
            )
            try:
                self.spool.absolute(relative).unlink()
            except OSError as err:
                logger.error("orphan copy of %s could not be removed: %s", sop_instance_uid, err)

    def record(
        self,
        header: InstanceHeader,
        relative: str,
        size_bytes: int,
        calling_ae_title: str,
        *,
        association_id: int | None = None,
    ) -> bool:
        """Record the row of an instance whose file is already in the spool.

        Parameters
        ----------
        header : InstanceHeader
            Parsed header of the instance.
        relative : str
            Spool-relative path of its file.
        size_bytes : int
            Size of the file in bytes.
        calling_ae_title : str
            Calling AE title of the association that carried it.
        association_id : int or None
            Row id of that association, None when not tracked.

        Returns
        -------
        bool
            True if recorded now, False if a row for this SOPInstanceUID
            already exists.

        Raises
        ------
        SQLAlchemyError
            If the database cannot record the row.
        InvalidInstanceError
            If its SeriesInstanceUID is already a series of another study.
        """
        learned: list[tuple[str, _SeriesKey]] = []
        try:
            # One writer at a time: threads, and the receiver processes sharing this spool,
            # queue here and take turns at once instead of meeting on SQLite's lock, whose
            # busy handler sleeps 1-100 ms between tries.
            with self._write_lock, self._spool_lock():
                now = utcnow()
                if self._record_fast(
                    header, relative, size_bytes, calling_ae_title, association_id, now
                ):
                    return True
                with self.session_factory.begin() as session:
                    self._record(
                        session,
                        header,
                        relative,
                        size_bytes,
                        calling_ae_title,
                        association_id,
                        now,
                        learned,
                    )
        except IntegrityError:
            # A concurrent association stored the same SOP instance first: same path, same bytes.
            logger.info(
                "instance %s stored concurrently by another association", header.sop_instance_uid
            )
            return False
        for series_uid, key in learned:  # only committed rows enter the cache
            self._remember(series_uid, key)
        return True

    @contextmanager
    def _spool_lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<spool>/.ingest.lock`` (with ``_write_lock`` held)."""
        if fcntl is None:  # not POSIX: SQLite's own locking only
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self.spool.root / ".ingest.lock", os.O_RDWR | os.O_CREAT, 0o600)
            weakref.finalize(self, os.close, self._lock_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- cache
    def _cached(self, series_uid: str) -> _SeriesKey | None:
        with self._lock:
            return self._series_keys.get(series_uid)

    def _remember(self, series_uid: str, key: _SeriesKey) -> None:
        with self._lock:
            self._series_keys[series_uid] = key
            self._series_keys.move_to_end(series_uid)
            while len(self._series_keys) > SERIES_CACHE_SIZE:
                self._series_keys.popitem(last=False)

    # ---------------------------------------------------------------- record
    def _record_fast(
        self,
        header: InstanceHeader,
        relative: str,
        size_bytes: int,
        calling_ae_title: str,
        association_id: int | None,
        now: datetime,
    ) -> bool:
        """Record a further instance of a cached RECEIVING series on a bare connection.

        Returns False (nothing written) when the series is not cached or no
        longer RECEIVING; the ORM path then does the full work.
        """
        key = self._cached(header.series_instance_uid)
        if key is None or self._engine is None:
            return False
        if key.study_instance_uid and key.study_instance_uid != header.study_instance_uid:
            return False  # the slow path refuses it
        with self._engine.begin() as connection:
            bumped = connection.execute(
                _BUMP_SERIES,
                {
                    "b_series_id": key.series_id,
                    "b_series_uid": header.series_instance_uid,
                    "b_now": now,
                },
            )
            if bumped.rowcount != 1:
                return False
            connection.execute(
                _INSERT_INSTANCE,
                self._instance_values(
                    header,
                    key.series_id,
                    relative,
                    size_bytes,
                    calling_ae_title,
                    association_id,
                    self._slice_position(header, key.orientation),
                    now,
                ),
            )
        return True

    @staticmethod
    def _slice_position(header: InstanceHeader, orientation: tuple[float, ...] | None):
        if not same_orientation(header.image_orientation_patient, orientation):
            return None
        return position_along_normal(header.image_position_patient, orientation)

    @staticmethod
    def _instance_values(
        header: InstanceHeader,
        series_id: int,
        relative: str,
        size_bytes: int,
        calling_ae_title: str,
        association_id: int | None,
        slice_position_mm: float | None,
        now: datetime,
    ) -> dict:
        return {
            "series_id": series_id,
            "sop_instance_uid": header.sop_instance_uid,
            "sop_class_uid": header.sop_class_uid,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "instance_number": header.instance_number,
            "image_type": header.image_type[:128],
            "number_of_frames": header.number_of_frames,
            "path": relative,
            "size_bytes": size_bytes,
            "calling_ae_title": calling_ae_title,
            "received_at": now,
            "slice_position_mm": slice_position_mm,
            "images_in_acquisition": header.images_in_acquisition,
            "association_id": association_id,
        }

    def _record(
        self,
        session: Session,
        header: InstanceHeader,
        relative: str,
        size_bytes: int,
        calling_ae_title: str,
        association_id: int | None,
        now: datetime,
        learned: list[tuple[str, _SeriesKey]],
    ) -> None:
        # Slow path: new study or series, a series to re-open, or not cached.
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == header.study_instance_uid)
        )
        if study is None:
            study = Study(
                study_instance_uid=header.study_instance_uid,
                created_at=now,
                accession_number=header.accession_number,
                study_date=header.study_date,
            )
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
        elif series.study_id != study.id:
            raise InvalidInstanceError(
                _other_study_message(header, series.study.study_instance_uid)
            )
        elif series.state != SeriesState.RECEIVING:
            self._reopen(session, series, now)
        series.instance_count += 1
        series.last_instance_at = now
        orientation = (
            tuple(float(v) for v in series.image_orientation_patient)
            if series.image_orientation_patient
            else None
        )
        session.add(
            Instance(
                **self._instance_values(
                    header,
                    series.id,
                    relative,
                    size_bytes,
                    calling_ae_title,
                    association_id,
                    self._slice_position(header, orientation),
                    now,
                )
            )
        )
        session.flush()
        learned.append(
            (
                header.series_instance_uid,
                _SeriesKey(series.id, orientation, header.study_instance_uid),
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
            convolution_kernel=header.convolution_kernel[:128],
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
