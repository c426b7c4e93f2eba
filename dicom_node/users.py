"""Dashboard users: named accounts with Argon2id password hashes and a role.

Passwords are hashed with argon2-cffi's :class:`argon2.PasswordHasher` (its
RFC 9106 low-memory profile); nothing here implements cryptography itself.
Users are managed with ``dicom-node users add|list|remove|set-password|unlock``.

References
----------
RFC 9106, "Argon2 Memory-Hard Function for Password Hashing and Proof-of-Work
Applications"; OWASP Password Storage Cheat Sheet.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from dicom_node.db.models import User, UserRole, WebSession, utcnow
from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Allowed user names: letters, digits, ``.``, ``_``, ``-`` and ``@``; 1-64 characters.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
#: Shortest password accepted.
MIN_PASSWORD_LENGTH = 8


class UserError(ConfigurationError):
    """A user cannot be created or changed (bad name, short password, duplicate, unknown)."""


def password_hasher() -> PasswordHasher:
    """Return the password hasher used for every user (Argon2id, argon2-cffi defaults)."""
    return PasswordHasher()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def create_user(session: Session, username: str, password: str, role: UserRole | str) -> User:
    """Create a user with a hashed password.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    username : str
        Matches :data:`USERNAME_PATTERN`.
    password : str
        At least :data:`MIN_PASSWORD_LENGTH` characters; only its hash is stored.
    role : UserRole or str
        ``"admin"`` or ``"viewer"``.

    Returns
    -------
    User

    Raises
    ------
    UserError
        If the name is invalid or taken, the password too short or the role unknown.
    """
    if not USERNAME_PATTERN.match(username):
        raise UserError(f"invalid user name {username!r} (letters, digits, . _ @ -; 1-64)")
    try:
        role = UserRole(role)
    except ValueError as err:
        raise UserError(f"unknown role {role!r}; use admin or viewer") from err
    _check_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} exists already")
    user = User(
        username=username,
        password_hash=password_hasher().hash(password),
        role=role,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    logger.info("user %s created with role %s", username, role.value)
    return user


def set_password(session: Session, username: str, password: str) -> User:
    """Replace a user's password.

    Raises
    ------
    UserError
        If the user does not exist or the password is too short.
    """
    user = get_user(session, username)
    _check_password(password)
    user.password_hash = password_hasher().hash(password)
    ended = revoke_sessions(session, user.id)
    logger.info("password of user %s changed (%d session(s) ended)", username, ended)
    return user


def get_user(session: Session, username: str) -> User:
    """Return the user named ``username``.

    Raises
    ------
    UserError
        If there is no such user.
    """
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    """Every dashboard user, ordered by user name."""
    return list(session.scalars(select(User).order_by(User.username)))


def user_summary(user: User) -> dict[str, str | None]:
    """One row of ``dicom-node users list`` as JSON-ready values (never the password hash).

    Keys: ``username``, ``role``, ``created_at`` and ``last_login_at`` (ISO
    8601, UTC; None before the first login).
    """
    return {
        "username": user.username,
        "role": user.role.value,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def delete_user(session: Session, username: str) -> None:
    """Delete a user and all of their dashboard sessions.

    Raises
    ------
    UserError
        If there is no such user.
    """
    user = get_user(session, username)
    revoke_sessions(session, user.id)
    session.delete(user)
    logger.info("user %s deleted", username)


def authenticate(
    session: Session, username: str, password: str, now: datetime | None = None
) -> User | None:
    """Return the user if ``password`` is theirs, else None.

    An unknown user name costs the same hash verification as a wrong password,
    so response times do not reveal which names exist. A hash made with older
    parameters is upgraded on success.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits (last login time, rehash).
    username, password : str
        What the login form sent.
    now : datetime or None
        Login time (UTC).

    Returns
    -------
    User or None
    """
    hasher = password_hasher()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        try:
            hasher.verify(_dummy_hash(hasher), password)
        except VerificationError:
            pass
        return None
    try:
        hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    user.last_login_at = now or utcnow()
    return user


#: Random bytes of a session id (256 bits; OWASP asks for at least 64 bits of entropy).
SESSION_ID_BYTES = 32


def create_web_session(session: Session, user_id: int, now: datetime | None = None) -> str:
    """Open a server-side dashboard session for a user and return its id.

    The id is what the signed session cookie carries; the row is the session.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    user_id : int
        ``web_user.id`` of the user who just logged in.
    now : datetime or None
        Login time (UTC); default now.

    Returns
    -------
    str
        A URL-safe random id of :data:`SESSION_ID_BYTES` bytes from :mod:`secrets`.

    References
    ----------
    OWASP Session Management Cheat Sheet: "Session ID Entropy", "Renew the Session ID
    After Any Privilege Level Change".
    """
    now = now or utcnow()
    sid = secrets.token_urlsafe(SESSION_ID_BYTES)
    session.add(WebSession(id=sid, user_id=user_id, created_at=now, last_seen_at=now))
    session.flush()
    return sid


def session_user(
    session: Session,
    sid: str,
    idle_s: float,
    max_age_s: float,
    now: datetime | None = None,
    touch_after_s: float = 60.0,
) -> User | None:
    """Return the user of a live dashboard session, or None (and end it) if it expired.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits (``last_seen_at``, deletion of an expired row).
    sid : str
        The id the cookie carried.
    idle_s : float
        Seconds without a request after which the session ends (``web.session_idle_s``).
    max_age_s : float
        Seconds after login after which the session ends whatever its use
        (``web.session_max_age_s``).
    now : datetime or None
        Request time (UTC); default now.
    touch_after_s : float
        ``last_seen_at`` is written only when older than this many seconds, so
        polling pages do not write the database on every request.

    Returns
    -------
    User or None
        None when there is no such row (logged out, revoked, never existed) or it
        is past its idle or absolute lifetime.

    References
    ----------
    OWASP Session Management Cheat Sheet: "Session Expiration" (idle and absolute
    timeouts, enforced on the server side).
    """
    now = now or utcnow()
    row = session.get(WebSession, sid) if sid else None
    if row is None:
        return None
    if (now - row.last_seen_at > timedelta(seconds=idle_s)
            or now - row.created_at > timedelta(seconds=max_age_s)):  # fmt: skip
        session.delete(row)
        return None
    user = session.get(User, row.user_id)
    if user is None:
        session.delete(row)
        return None
    if now - row.last_seen_at > timedelta(seconds=touch_after_s):
        row.last_seen_at = now
    return user


def end_web_session(session: Session, sid: str | None) -> None:
    """Delete one dashboard session (logout); nothing happens if it does not exist.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    sid : str or None
        The id the cookie carried.
    """
    if sid:
        session.execute(delete(WebSession).where(WebSession.id == sid))


def revoke_sessions(session: Session, user_id: int) -> int:
    """Delete all dashboard sessions of a user (password change, removal, role change).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    user_id : int
        ``web_user.id``.

    Returns
    -------
    int
        Sessions ended.

    References
    ----------
    OWASP Session Management Cheat Sheet: invalidate sessions on password change.
    """
    # A DML statement's result is a CursorResult (it has rowcount); execute() is typed as Result.
    result = cast(
        CursorResult[Any],
        session.execute(delete(WebSession).where(WebSession.user_id == user_id)),
    )
    return result.rowcount or 0


_DUMMY_HASHES: dict[tuple, str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    # Made once per hasher parameters: hashing it on every unknown name would cost a
    # second Argon2 run and make unknown names twice as slow to refuse as known ones.
    key = (
        hasher.time_cost,
        hasher.memory_cost,
        hasher.parallelism,
        hasher.hash_len,
        hasher.salt_len,
        hasher.type,
    )
    if key not in _DUMMY_HASHES:
        _DUMMY_HASHES[key] = hasher.hash("not-a-user-password")
    return _DUMMY_HASHES[key]
