"""Dashboard users: named accounts with Argon2id password hashes and a role.

Passwords are hashed with argon2-cffi's :class:`argon2.PasswordHasher` (its
RFC 9106 low-memory profile); nothing here implements cryptography itself.
Users are managed with ``dicom-node users add|list|remove|set-password``.

References
----------
RFC 9106, "Argon2 Memory-Hard Function for Password Hashing and Proof-of-Work
Applications"; OWASP Password Storage Cheat Sheet.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import User, UserRole, utcnow
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
    logger.info("password of user %s changed", username)
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


def delete_user(session: Session, username: str) -> None:
    """Delete a user (their open sessions stop working at the next request).

    Raises
    ------
    UserError
        If there is no such user.
    """
    session.delete(get_user(session, username))
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


_DUMMY_HASHES: dict[tuple, str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    # Made once per hasher parameters: hashing it on every unknown name would cost a
    # second Argon2 run and make unknown names twice as slow to refuse as known ones.
    key = (hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.hash_len,
           hasher.salt_len, hasher.type)
    if key not in _DUMMY_HASHES:
        _DUMMY_HASHES[key] = hasher.hash("not-a-user-password")
    return _DUMMY_HASHES[key]
