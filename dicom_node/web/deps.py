"""What the dashboard's routers share: the per-application context and route dependencies.

One :class:`WebContext` is built by :func:`~dicom_node.web.app.create_app` and
kept on ``app.state.ctx``; routes reach it through the :data:`Context`
dependency instead of closure variables, so nothing here is created at import
time. The user, role and CSRF checks are FastAPI dependencies
(:data:`CurrentUser`, :data:`AdminUser`, :data:`UploadUser`,
:func:`csrf_protect`); path and query types (:data:`RowId`,
:data:`PageNumber`) carry their bounds.

Importing this module imports neither pynetdicom nor TensorFlow: the upload and
viewer types are named for type checkers only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request
from fastapi import Path as PathParameter
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from dicom_node.login_throttle import ThrottlePolicy
from dicom_node.users import session_user
from dicom_node.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    CsrfTokens,
    Forbidden,
    LoginRequired,
    SessionUser,
)

if TYPE_CHECKING:
    from dicom_node.stats import DestinationMonitor
    from dicom_node.web.upload import UploadIngest
    from dicom_node.web.viewer import SliceRenderer

logger = logging.getLogger(__name__)

#: Most files in one upload request.
MAX_UPLOAD_FILES = 20000
#: Largest row id (SQLite INTEGER and PostgreSQL BIGINT are signed 64-bit).
MAX_ROW_ID = 2**63 - 1
#: Bytes of multipart form overhead allowed on top of ``web.max_upload_bytes``.
FORM_OVERHEAD_BYTES = 1 << 20


@dataclass
class WebContext:
    """What the routes share; one per application (no module-level state).

    Parameters
    ----------
    settings : Settings
    session_factory : sqlalchemy.orm.sessionmaker
    csrf : CsrfTokens
    templates : fastapi.templating.Jinja2Templates
    renderer : SliceRenderer
    uploader : UploadIngest
    registry : prometheus_client.CollectorRegistry
    monitor : DestinationMonitor
    monitor_is_managed : bool
        True when the node's scheduler refreshes ``monitor`` (pages then never
        wait for a C-ECHO).
    workers_alive : callable or None
    throttle : ThrottlePolicy
        Failed-login limits (``web.login_*``).
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    csrf: CsrfTokens
    templates: Jinja2Templates
    renderer: SliceRenderer
    uploader: UploadIngest
    registry: CollectorRegistry
    monitor: DestinationMonitor
    monitor_is_managed: bool
    workers_alive: Callable[[], int] | None
    throttle: ThrottlePolicy


def web_context(request: Request) -> WebContext:
    """The :class:`WebContext` of the application serving ``request`` (``app.state.ctx``).

    Parameters
    ----------
    request : fastapi.Request
        Any request of the application.

    Returns
    -------
    WebContext

    Raises
    ------
    AttributeError
        If the application was not built by :func:`~dicom_node.web.app.create_app`.
    """
    return request.app.state.ctx


async def _context_dependency(request: Request) -> WebContext:
    # async, so that FastAPI does not hand this attribute read to the thread pool
    return web_context(request)


#: Route parameter type: the application's :class:`WebContext`.
Context = Annotated[WebContext, Depends(_context_dependency)]


def current_user(request: Request) -> SessionUser:
    """Route dependency: the user of the request's server-side session (``web_session``).

    The signed cookie carries only the session's random id; the row it names is
    looked up on every request, so logout, ``users set-password`` and
    ``users remove`` (which delete rows) end a session even where its cookie was
    copied. Sessions past ``web.session_idle_s`` of inactivity or
    ``web.session_max_age_s`` since login are refused and deleted.

    Raises
    ------
    LoginRequired
        If no one is logged in, or the session was ended, expired or its user deleted.

    References
    ----------
    OWASP Session Management Cheat Sheet (server-side session invalidation and expiry).
    """
    sid = request.session.get("sid")
    if not isinstance(sid, str) or not sid:
        if request.session.get("uid") is not None:
            request.session.clear()  # a cookie from before server-side sessions
        raise LoginRequired()
    ctx = web_context(request)
    web = ctx.settings.web
    with ctx.session_factory.begin() as session:
        user = session_user(session, sid, web.session_idle_s, web.session_max_age_s)
        found = SessionUser(user.id, user.username, user.role) if user is not None else None
    if found is None:
        request.session.clear()
        raise LoginRequired()
    return found


def admin_user(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """Route dependency: the logged-in user, who must have the admin role.

    Raises
    ------
    LoginRequired
        If no one is logged in (see :func:`current_user`).
    Forbidden
        For a viewer.
    """
    if not user.is_admin:
        raise Forbidden(f"user {user.username} has the viewer role; this needs an admin")
    return user


def upload_user(
    request: Request, user: Annotated[SessionUser, Depends(current_user)]
) -> SessionUser:
    """Route dependency: a user allowed to upload (admins; viewers unless disabled).

    Raises
    ------
    LoginRequired
        If no one is logged in (see :func:`current_user`).
    Forbidden
        For a viewer when ``web.viewers_may_upload`` is false.
    """
    if not user.is_admin and not web_context(request).settings.web.viewers_may_upload:
        raise Forbidden("uploads are reserved to admins on this node")
    return user


#: Route parameter type: the logged-in user (:func:`current_user`).
CurrentUser = Annotated[SessionUser, Depends(current_user)]
#: Route parameter type: the logged-in admin (:func:`admin_user`).
AdminUser = Annotated[SessionUser, Depends(admin_user)]
#: Route parameter type: the logged-in user allowed to upload (:func:`upload_user`).
UploadUser = Annotated[SessionUser, Depends(upload_user)]
#: A row id in a URL path; out of range is "not found" (404).
RowId = Annotated[int, PathParameter(ge=0, le=MAX_ROW_ID)]
#: A page number in a query string; out of range is a bad request (400).
PageNumber = Annotated[int, Query(ge=1, le=2**31 - 1)]


class RequestTooLarge(Exception):  # noqa: N818 - answered with HTTP 413
    """A request body is larger than ``web.max_upload_bytes``.

    Parameters
    ----------
    limit_bytes : int
    """

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the request exceeds {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


async def csrf_protect(request: Request) -> None:
    """Route dependency of every state-changing request: check the CSRF token.

    The token comes from the ``X-CSRF-Token`` header or the ``csrf_token``
    form field. A request larger than ``web.max_upload_bytes`` (plus 1 MiB of
    form overhead) is refused before it is read.

    Raises
    ------
    RequestTooLarge
        If ``Content-Length`` is over the cap (answered 413).
    Forbidden
        If the token is missing, expired or not this session's.

    References
    ----------
    OWASP Cross-Site Request Forgery Prevention Cheat Sheet (synchronizer token pattern).
    """
    ctx = web_context(request)
    limit = ctx.settings.web.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + FORM_OVERHEAD_BYTES:
        raise RequestTooLarge(limit)
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=1000)
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    if not ctx.csrf.valid(request.session, token):
        logger.warning(
            "refused %s %s: missing or invalid CSRF token", request.method, request.url.path
        )
        raise Forbidden("missing or invalid CSRF token: reload the page and try again")


def safe_next(value: str | None) -> str:
    """Where to go after a login or an action: only a same-site relative path, else ``/``.

    Parameters
    ----------
    value : str or None
        A ``next`` query or form value.

    Returns
    -------
    str
        ``value`` when it starts with one ``/`` and has no backslash; ``/`` otherwise
        (no open redirect).

    References
    ----------
    OWASP Unvalidated Redirects and Forwards Cheat Sheet.
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def client_address(request: Request) -> str:
    """The peer address of ``request`` for logs and audit records, ``?`` when unknown."""
    return request.client.host if request.client else "?"
