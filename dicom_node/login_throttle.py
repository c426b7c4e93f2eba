"""Login throttling: failed dashboard logins lock a user name or a client address out.

After ``web.login_max_failures`` failures within ``web.login_window_s`` for one
user name (known or not), or ``web.login_max_failures_per_address`` for one
client address, logins of that name or from that address are refused (HTTP 429)
without checking the password until ``web.login_lockout_s`` has passed. A
successful login clears the user name's failures; ``dicom-node users unlock``
or the Unlock button of the dashboard's configuration page lifts a lockout
early. Failures and lockouts are rows of ``web_login_failure`` and
``web_login_lockout``, so every process serving the dashboard agrees.
Every lockout and every unlock is audited: one line to the ``dicom_node.audit``
logger (WARNING) and one ``audit_event`` row (direction ``"web"``, outcome
``LOCKED`` or ``UNLOCKED``), committed with the change itself.

References
----------
OWASP Authentication Cheat Sheet, "Protect Against Automated Attacks" (account
lockout: threshold, observation window, lockout duration, administrator unlock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.audit import AuditOutcome, AuditRecord, record_in_session
from dicom_node.db.models import LoginFailure, LoginLockout, utcnow

#: ``kind`` of failures and lockouts counted per user name.
USER = "user"
#: ``kind`` of failures and lockouts counted per client address.
ADDRESS = "address"


@dataclass(frozen=True)
class ThrottlePolicy:
    """Limits of login throttling.

    Parameters
    ----------
    max_failures : int
        Failures per user name within ``window_s`` that lock it.
    max_failures_per_address : int
        Failures per client address within ``window_s`` that lock it.
    window_s : float
        Observation window, seconds.
    lockout_s : float
        Duration of a lockout, seconds.
    """

    max_failures: int = 5
    max_failures_per_address: int = 20
    window_s: float = 900.0
    lockout_s: float = 900.0

    @classmethod
    def from_settings(cls, web) -> ThrottlePolicy:
        """Build the policy from :class:`dicom_node.config.WebSettings`."""
        return cls(web.login_max_failures, web.login_max_failures_per_address,
                   web.login_window_s, web.login_lockout_s)  # fmt: skip


#: Longest key stored per kind (user names are capped as in the failed-login log line).
_KEY_LENGTH = {USER: 64, ADDRESS: 255}


def _keys(username: str, address: str) -> list[tuple[str, str]]:
    return [(USER, username[: _KEY_LENGTH[USER]]), (ADDRESS, address[: _KEY_LENGTH[ADDRESS]])]


def _what(kind: str, key: str) -> str:
    return f"{'user name' if kind == USER else 'address'} {key!r}"


def _audit(session: Session, outcome: str, address: str, reason: str, now: datetime) -> None:
    record_in_session(
        session,
        AuditRecord(direction="web", outcome=outcome, peer_address=address,
                    started_at=now, ended_at=now, reason=reason),
    )  # fmt: skip


def locked_until(
    session: Session, username: str, address: str, now: datetime | None = None
) -> datetime | None:
    """Return when the lockout of this user name or address ends, or None if neither is locked.

    An expired lockout is deleted together with the failures that led to it.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    username : str
        The user name the login form sent (known or not).
    address : str
        The client address.
    now : datetime or None
        Request time (UTC); default now.

    Returns
    -------
    datetime or None
        The later end (UTC) of the lockouts that apply.
    """
    now = now or utcnow()
    until: datetime | None = None
    for kind, key in _keys(username, address):
        row = session.scalar(
            select(LoginLockout).where(LoginLockout.kind == kind, LoginLockout.key == key)
        )
        if row is None:
            continue
        if row.locked_until <= now:
            session.delete(row)
            session.execute(
                delete(LoginFailure).where(LoginFailure.kind == kind, LoginFailure.key == key)
            )
            continue
        until = row.locked_until if until is None else max(until, row.locked_until)
    return until


def record_failure(
    session: Session,
    username: str,
    address: str,
    policy: ThrottlePolicy,
    now: datetime | None = None,
) -> datetime | None:
    """Count one failed login against the user name and the address; lock them past the limit.

    Failures older than ``policy.window_s`` are deleted. A new lockout is
    audited (:func:`dicom_node.audit.record_in_session`: user name or address,
    failures, end; the address of the last attempt).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    username, address : str
        As for :func:`locked_until`.
    policy : ThrottlePolicy
        Limits, window and lockout duration.
    now : datetime or None
        Time of the failure (UTC); default now.

    Returns
    -------
    datetime or None
        The end (UTC) of a lockout this failure started, else None.
    """
    now = now or utcnow()
    since = now - timedelta(seconds=policy.window_s)
    until: datetime | None = None
    limits = {USER: policy.max_failures, ADDRESS: policy.max_failures_per_address}
    for kind, key in _keys(username, address):
        session.execute(
            delete(LoginFailure).where(
                LoginFailure.kind == kind, LoginFailure.key == key, LoginFailure.failed_at < since
            )
        )
        session.add(LoginFailure(kind=kind, key=key, failed_at=now))
        session.flush()
        count = (
            session.scalar(
                select(func.count(LoginFailure.id)).where(
                    LoginFailure.kind == kind, LoginFailure.key == key
                )
            )
            or 0
        )  # COUNT always returns a row
        if count < limits[kind]:
            continue
        end = now + timedelta(seconds=policy.lockout_s)
        try:
            with session.begin_nested():  # another process may have locked it just now
                session.add(
                    LoginLockout(kind=kind, key=key, locked_at=now, locked_until=end,
                                 failures=count)
                )  # fmt: skip
        except IntegrityError:
            pass
        else:
            _audit(
                session, AuditOutcome.LOCKED, address,
                f"login lockout of {_what(kind, key)} after {count} failed logins within "
                f"{policy.window_s:g} s, until {end.isoformat(timespec='seconds')}; "
                "lift it with: dicom-node users unlock",
                now,
            )  # fmt: skip
        until = end if until is None else max(until, end)
    return until


def clear_failures(session: Session, username: str) -> None:
    """Forget the failed logins of a user name (after a successful login).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    username : str
        The user who logged in.
    """
    session.execute(
        delete(LoginFailure).where(LoginFailure.kind == USER, LoginFailure.key == username[:64])
    )


def unlock(
    session: Session,
    kind: str,
    key: str,
    by: str = "?",
    address: str = "",
    now: datetime | None = None,
) -> bool:
    """Lift the lockout of a user name or address and forget its failures; audit it.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits (the audit row commits with the unlock).
    kind : str
        :data:`USER` or :data:`ADDRESS`.
    key : str
        The user name or the client address (cut to the length stored).
    by : str
        Who lifted it, for the audit record: the operating-system user of
        ``dicom-node users unlock`` or the dashboard administrator.
    address : str
        Where the administrator was (dashboard), for the audit record.
    now : datetime or None
        Time of the unlock (UTC); default now.

    Returns
    -------
    bool
        True if a lockout was in place (expired or not).

    Raises
    ------
    ValueError
        If ``kind`` is neither :data:`USER` nor :data:`ADDRESS`.

    References
    ----------
    OWASP Authentication Cheat Sheet, account lockout ("an administrator can
    unlock the account"); OWASP Logging Cheat Sheet.
    """
    if kind not in (USER, ADDRESS):
        raise ValueError(f"unknown lockout kind {kind!r}")
    key = key[: _KEY_LENGTH[kind]]
    # A DML statement's result is a CursorResult (it has rowcount); execute() is typed as Result.
    removed = cast(
        CursorResult[Any],
        session.execute(
            delete(LoginLockout).where(LoginLockout.kind == kind, LoginLockout.key == key)
        ),
    ).rowcount
    session.execute(delete(LoginFailure).where(LoginFailure.kind == kind, LoginFailure.key == key))
    state = "lifted" if removed else "not in place; failures cleared"
    _audit(session, AuditOutcome.UNLOCKED, address,
           f"login lockout of {_what(kind, key)} {state} by {by}", now or utcnow())  # fmt: skip
    return bool(removed)


@dataclass(frozen=True)
class Lockout:
    """A lockout in force, as the users admin page lists it.

    Parameters
    ----------
    kind : str
        :data:`USER` or :data:`ADDRESS`.
    key : str
        The user name (as typed) or the client address.
    locked_at, locked_until : datetime
        UTC.
    failures : int
        Failed logins that led to it.
    """

    kind: str
    key: str
    locked_at: datetime
    locked_until: datetime
    failures: int


def active_lockouts(session: Session, now: datetime | None = None) -> list[Lockout]:
    """Return the lockouts still in force, user names first, then addresses.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session (read only).
    now : datetime or None
        UTC; default now.

    Returns
    -------
    list of Lockout
    """
    now = now or utcnow()
    rows = session.scalars(
        select(LoginLockout)
        .where(LoginLockout.locked_until > now)
        .order_by(LoginLockout.kind.desc(), LoginLockout.key)
    )
    return [Lockout(r.kind, r.key, r.locked_at, r.locked_until, r.failures) for r in rows]
