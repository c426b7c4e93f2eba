"""The association log: one row per association the Storage SCP accepted, open until closed.

Series completeness reads it: a series whose carrying associations have all
been released, and whose slices prove a complete stack, can be complete
before the quiet time. Rows are written at EVT_ACCEPTED and closed at
EVT_RELEASED, EVT_ABORTED or EVT_CONN_CLOSE. Rows left open by a receiver that
died are closed as LOST when the node starts (or restarts that receiver).

References
----------
DICOM PS3.8 section 7 (association establishment, release and abort).
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Association, AssociationOutcome, utcnow

logger = logging.getLogger(__name__)


class AssociationLog:
    """Writes the ``association`` rows of one receiver.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    receiver : str
        Identifies the receiving process in the rows (``host:pid``).
    """

    def __init__(self, session_factory: sessionmaker[Session], receiver: str) -> None:
        self.session_factory = session_factory
        self.receiver = receiver[:128]

    def open(self, calling_ae_title: str, peer_address: str) -> int:
        """Record an accepted association and return its row id.

        Parameters
        ----------
        calling_ae_title : str
            The requestor's AE title.
        peer_address : str
            The requestor's ``host:port``.

        Returns
        -------
        int
            The row id, stored with every instance the association carries.

        Raises
        ------
        SQLAlchemyError
            If the row cannot be written.
        """
        with self.session_factory.begin() as session:
            row = Association(
                calling_ae_title=calling_ae_title[:16],
                peer_address=peer_address[:64],
                receiver=self.receiver,
                opened_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return row.id

    def close(self, association_id: int, outcome: AssociationOutcome) -> None:
        """Mark association ``association_id`` closed now with ``outcome`` (idempotent).

        Raises
        ------
        SQLAlchemyError
            If the row cannot be updated.
        """
        with self.session_factory.begin() as session:
            session.execute(
                update(Association)
                .where(Association.id == association_id, Association.closed_at.is_(None))
                .values(closed_at=utcnow(), outcome=outcome)
            )


def close_lost_associations(session: Session, receiver: str | None = None) -> int:
    """Close open association rows as LOST: all of them, or those of one ``receiver``.

    Run when the node starts (no association survives a restart) and when a
    receiver process is replaced.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    receiver : str or None
        Only rows of this receiver; every open row when None.

    Returns
    -------
    int
        Number of rows closed.
    """
    statement = update(Association).where(Association.closed_at.is_(None))
    if receiver is not None:
        statement = statement.where(Association.receiver == receiver)
    # A DML statement's result is a CursorResult (it has rowcount); execute() is typed as Result.
    result = cast(
        CursorResult[Any],
        session.execute(statement.values(closed_at=utcnow(), outcome=AssociationOutcome.LOST)),
    )
    closed = int(result.rowcount or 0)
    if closed:
        logger.warning("%d association(s) left open by a stopped receiver closed as LOST", closed)
    return closed
