"""Administration: ``/config`` (the effective settings, users, login lockouts) and
``POST /users/unlock``.

Secrets never reach the page: the database URL's password is hidden, webhook
URLs are cut to scheme and host, selection rules are shown by name.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from dicom_node.config import Settings
from dicom_node.db.models import User
from dicom_node.login_throttle import ADDRESS, USER, active_lockouts, unlock
from dicom_node.web.deps import AdminUser, Context, client_address, csrf_protect
from dicom_node.web.rendering import render

router = APIRouter()


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.netloc else "…"


def config_view(settings: Settings) -> dict[str, Any]:
    """The settings as shown on ``/config``, with passwords and webhook paths left out.

    Parameters
    ----------
    settings : Settings
        The node's settings.

    Returns
    -------
    dict
        ``settings.model_dump(mode="json")`` with ``storage.database_url``'s
        password hidden, each webhook URL cut to ``scheme://host/…`` (user info
        dropped) and ``selection.rules`` replaced by the rules' names.
    """
    data = settings.model_dump(mode="json")
    if settings.storage.database_url:
        data["storage"]["database_url"] = make_url(settings.storage.database_url).render_as_string(
            hide_password=True
        )
    for hook in data["notifications"]["webhooks"]:
        hook["url"] = _redact_url(hook["url"])
    data["selection"]["rules"] = [r["name"] for r in data["selection"]["rules"]]
    return data


@router.get("/config", response_class=HTMLResponse)
def config_page(request: Request, user: AdminUser, ctx: Context):
    """Admins: the effective configuration (:func:`config_view`), users and lockouts."""
    with ctx.session_factory() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        user_rows = [
            {"username": u.username, "role": u.role.value, "created_at": u.created_at,
             "last_login_at": u.last_login_at}
            for u in users
        ]  # fmt: skip
        lockouts = active_lockouts(session)
    return render(
        request,
        "config.html",
        user,
        active="config",
        config_json=json.dumps(config_view(ctx.settings), indent=2),
        users=user_rows,
        lockouts=lockouts,
    )


@router.post("/users/unlock", dependencies=[Depends(csrf_protect)])
async def unlock_login(request: Request, user: AdminUser, ctx: Context):
    """Admins: lift a login lockout (issue 13 item 10), as ``dicom-node users unlock`` does.

    The form sends ``kind`` (``user`` or ``address``) and ``key`` (the user name
    or address). The unlock is audited with the administrator's name and address.
    Answers 303 to ``/config`` with a flash message.
    """
    form = await request.form()
    kind = str(form.get("kind", ""))
    key = str(form.get("key", ""))
    address = client_address(request)
    if kind not in (USER, ADDRESS) or not key:
        request.session["flash"] = ("error", "Nothing to unlock.")
        return RedirectResponse("/config", status_code=303)

    def lift() -> bool:
        with ctx.session_factory.begin() as session:
            return unlock(session, kind, key, by=f"dashboard user {user.username}", address=address)

    lifted = await run_in_threadpool(lift)
    what = "user name" if kind == USER else "address"
    request.session["flash"] = (
        ("ok", f"Login lockout of {what} {key[:64]} lifted.") if lifted
        else ("error", f"The {what} {key[:64]} was not locked out.")
    )  # fmt: skip
    return RedirectResponse("/config", status_code=303)
