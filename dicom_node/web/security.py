"""Sessions, CSRF tokens and roles for the dashboard.

Sessions are Starlette's :class:`~starlette.middleware.sessions.SessionMiddleware`
(a cookie signed with itsdangerous). Each session holds a random value; the
CSRF token put in every form is that value signed and time-stamped with
itsdangerous (:class:`~itsdangerous.URLSafeTimedSerializer`, its own salt), and
every state-changing request must send it back (form field ``csrf_token`` or
header ``X-CSRF-Token``): the synchronizer-token pattern.

The signing secret comes from ``web.session_secret`` (or
``DICOM_NODE_WEB__SESSION_SECRET``); when empty it is generated once into
``<base_dir>/web-session-secret`` with mode 0600.

References
----------
OWASP Cross-Site Request Forgery Prevention Cheat Sheet ("Synchronizer Token
Pattern"); OWASP Session Management Cheat Sheet.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from dicom_node.config import Settings
from dicom_node.db.models import UserRole

logger = logging.getLogger(__name__)

#: File (under ``storage.base_dir``) holding the generated session secret.
SECRET_FILE_NAME = "web-session-secret"
#: Form field and header that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def session_secret(settings: Settings) -> str:
    """Return the secret that signs sessions and CSRF tokens.

    Parameters
    ----------
    settings : Settings
        ``web.session_secret`` when set; else the secret file in
        ``storage.base_dir``, created with mode 0600 on first use.

    Returns
    -------
    str

    Raises
    ------
    OSError
        If the secret file cannot be created or read.
    """
    configured = settings.web.session_secret.get_secret_value()
    if configured:
        return configured
    path = Path(settings.storage.base_dir) / SECRET_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            logger.warning("%s is readable by group or others; chmod 600 it", path)
        return path.read_text("ascii").strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    logger.info("generated the dashboard's session secret in %s", path)
    return path.read_text("ascii").strip()


class CsrfTokens:
    """Issue and check CSRF tokens bound to a session.

    Parameters
    ----------
    secret : str
        The session secret (a different salt keeps the two uses apart).
    max_age_s : int
        A token older than this is refused.
    """

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="dicom-node-csrf")
        self.max_age_s = max_age_s

    @staticmethod
    def session_value(session: dict) -> str:
        """Return the session's random CSRF value, creating it if needed."""
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def token(self, session: dict) -> str:
        """Return a signed token for the forms of this session."""
        return self._serializer.dumps(self.session_value(session))

    def valid(self, session: dict, token: str | None) -> bool:
        """True if ``token`` was issued for this session and has not expired."""
        expected = session.get("csrf")
        if not token or not expected:
            return False
        try:
            value = self._serializer.loads(token, max_age=self.max_age_s)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, expected)


@dataclass(frozen=True)
class SessionUser:
    """The logged-in user of a request.

    Parameters
    ----------
    id : int
    username : str
    role : UserRole
    """

    id: int
    username: str
    role: UserRole

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == UserRole.ADMIN


class LoginRequired(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a route dependency when no user is logged in."""


class Forbidden(Exception):  # noqa: N818
    """Raised when the user's role or a missing CSRF token forbids the request.

    Parameters
    ----------
    message : str
        Shown on the 403 page.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
