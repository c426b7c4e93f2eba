"""Login and logout: ``GET/POST /login``, ``POST /logout``.

A login creates a server-side session (``web_session``) whose random id is
the only thing the signed cookie carries. Failed logins are throttled per
user name and per address (:mod:`dicom_node.login_throttle`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from dicom_node.db.models import utcnow
from dicom_node.login_throttle import clear_failures, locked_until, record_failure
from dicom_node.users import authenticate, create_web_session, end_web_session
from dicom_node.web.deps import Context, client_address, csrf_protect, safe_next
from dicom_node.web.rendering import render
from dicom_node.web.security import SessionUser

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):  # the query's name
    """The login form; a logged-in user is sent on to ``next`` (same-site paths only)."""
    if request.session.get("uid") is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(csrf_protect)])
async def login(request: Request, ctx: Context):
    """Check the form's ``username`` and ``password``; on success a fresh session.

    Answers 303 to ``next`` on success, 401 with the form for a wrong user name
    or password, 429 with ``Retry-After`` while the name or address is locked out.

    References
    ----------
    OWASP Authentication Cheat Sheet (login throttling, session renewal after login).
    """
    form = await request.form()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    address = client_address(request)
    session_factory = ctx.session_factory
    throttle = ctx.throttle

    def check() -> tuple[SessionUser, str] | datetime | None:
        # Throttled per user name and per address (issue 13 item 10; OWASP
        # Authentication Cheat Sheet): a locked name or address is refused before
        # any password check, so guessing goes no faster than the limits allow.
        with session_factory.begin() as session:
            until = locked_until(session, username, address)
            if until is not None:
                return until
            user = authenticate(session, username, password)
            if user is None:
                return record_failure(session, username, address, throttle)
            clear_failures(session, user.username)
            sid = create_web_session(session, user.id)
            return SessionUser(user.id, user.username, user.role), sid

    checked = await run_in_threadpool(check)
    if isinstance(checked, datetime):
        logger.warning(
            "refused login for user name %r from %s: locked out until %s",
            username[:64],
            address,
            checked.isoformat(timespec="seconds"),
        )
        wait_s = max(1, int((checked - utcnow()).total_seconds()) + 1)
        response = render(
            request, "login.html", None, 429, next=target,
            error=f"Too many failed logins for this user name or from this address. Logins "
            f"are refused for {max(1, round(wait_s / 60))} more minute(s); an administrator "
            "can lift this with: dicom-node users unlock NAME.",
        )  # fmt: skip
        response.headers["Retry-After"] = str(wait_s)
        return response
    if checked is None:
        logger.warning("failed login for user name %r from %s", username[:64], address)
        return render(
            request, "login.html", None, 401, next=target, error="Wrong user name or password."
        )
    user, sid = checked
    old_sid = request.session.get("sid")
    if isinstance(old_sid, str):
        await run_in_threadpool(_end_session, session_factory, old_sid)
    request.session.clear()  # a fresh session (and CSRF value) after login
    request.session["uid"] = user.id
    request.session["sid"] = sid
    logger.info("user %s logged in from %s", user.username, client_address(request))
    return RedirectResponse(target, status_code=303)


def _end_session(session_factory: sessionmaker[Session], sid: str | None) -> None:
    with session_factory.begin() as session:
        end_web_session(session, sid)


@router.post("/logout", dependencies=[Depends(csrf_protect)])
def logout(request: Request, ctx: Context):
    """End the server-side session and clear the cookie; 303 to the login page."""
    sid = request.session.get("sid")
    _end_session(ctx.session_factory, sid if isinstance(sid, str) else None)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
