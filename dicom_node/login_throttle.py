"""Login throttling: failed dashboard logins lock a user name or a client address out.

After ``web.login_max_failures`` failures within ``web.login_window_s`` for one
user name (known or not), or ``web.login_max_failures_per_address`` for one
client address, logins of that name or from that address are refused (HTTP 429)
without checking the password until ``web.login_lockout_s`` has passed. A
successful login clears the user name's failures; ``dicom-node users unlock``
lifts a lockout early. Failures and lockouts are rows of ``web_login_failure``
and ``web_login_lockout``, so every process serving the dashboard agrees.
Lockouts and unlocks are logged at WARNING, as failed logins are.

References
----------
OWASP Authentication Cheat Sheet, "Protect Against Automated Attacks" (account
lockout: threshold, observation window, lockout duration, administrator unlock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.models import LoginFailure, LoginLockout, utcnow

logger = logging.getLogger(__name__)

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


def _keys(username: str, address: str) -> list[tuple[str, str]]:
    return [(USER, username[:64]), (ADDRESS, address[:255])]


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

    Failures older than ``policy.window_s`` are deleted. A new lockout is logged
    at WARNING (user name or address, failures, end).

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
        count = session.scalar(
            select(func.count(LoginFailure.id)).where(
                LoginFailure.kind == kind, LoginFailure.key == key
            )
        )
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
            logger.warning(
                "login lockout of %s %r after %d failed logins within %d s (last from %s), "
                "until %s; lift it with: dicom-node users unlock",
                "user name" if kind == USER else "address", key, count, policy.window_s,
                address, end.isoformat(timespec="seconds"),
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


def unlock(session: Session, kind: str, key: str, by: str = "?") -> bool:
    """Lift the lockout of a user name or address and forget its failures; log it at WARNING.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    kind : str
        :data:`USER` or :data:`ADDRESS`.
    key : str
        The user name or the client address.
    by : str
        Who lifted it (for the log line), e.g. the operating-system user.

    Returns
    -------
    bool
        True if a lockout was in place (expired or not).

    Raises
    ------
    ValueError
        If ``kind`` is neither :data:`USER` nor :data:`ADDRESS`.
    """
    if kind not in (USER, ADDRESS):
        raise ValueError(f"unknown lockout kind {kind!r}")
    removed = session.execute(
        delete(LoginLockout).where(LoginLockout.kind == kind, LoginLockout.key == key)
    ).rowcount
    session.execute(delete(LoginFailure).where(LoginFailure.kind == kind, LoginFailure.key == key))
    logger.warning(
        "login lockout of %s %r %s by %s",
        "user name" if kind == USER else "address", key,
        "lifted" if removed else "not in place; failures cleared", by,
    )  # fmt: skip
    return bool(removed)
