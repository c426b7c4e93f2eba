"""Server-rendered pages: the Jinja2 environment, its filters and :func:`render`.

Every page goes through :func:`render`, which adds what ``base.html`` needs
(the user, a CSRF token, the flash message, the node's AE title, the time).
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dicom_node import __version__
from dicom_node.db.models import utcnow
from dicom_node.queries import format_study_date
from dicom_node.stats import STAGES
from dicom_node.web.deps import web_context
from dicom_node.web.security import CSRF_FIELD, SessionUser


def package_dir(name: str) -> Path:
    """The folder ``name`` (``templates``, ``static``) inside the ``dicom_node.web`` package."""
    return Path(str(resources.files("dicom_node.web").joinpath(name)))


def format_duration_s(value: float | None) -> str:
    """``842 ms``, ``12.4 s``, ``3 min 05 s``, ``2 h 04 min``; an en dash for None."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        minutes, seconds = int(value // 60), int(value % 60)
        return f"{minutes} min" if seconds == 0 else f"{minutes} min {seconds:02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"


def format_bytes(value: float | None) -> str:
    """Binary multiples: ``512 B``, ``3.2 MiB``, ``1.5 GiB``."""
    if value is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def format_time(value: datetime | str | None) -> str:
    """``2025-01-31 08:00:12`` (UTC) from an aware datetime or an ISO string.

    Raises
    ------
    ValueError
        If ``value`` is a string that is not an ISO 8601 date and time.
    """
    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def make_templates() -> Jinja2Templates:
    """The page templates of ``dicom_node/web/templates`` with the dashboard's filters.

    Filters: ``dur`` (:func:`format_duration_s`), ``bytes`` (:func:`format_bytes`),
    ``ts`` (:func:`format_time`), ``da`` (:func:`~dicom_node.queries.format_study_date`);
    globals: ``version`` and ``stages``.
    """
    templates = Jinja2Templates(directory=str(package_dir("templates")))
    env = templates.env
    env.filters["dur"] = format_duration_s
    env.filters["bytes"] = format_bytes
    env.filters["ts"] = format_time
    env.filters["da"] = format_study_date
    env.globals["version"] = __version__
    env.globals["stages"] = STAGES
    return templates


def render(
    request: Request,
    template: str,
    user: SessionUser | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page: ``template`` rendered with ``context`` and what every page shows.

    Takes (pops) the session's flash message, so that it is shown once.

    Parameters
    ----------
    request : fastapi.Request
        The request answered; its session gives the CSRF token and the flash.
    template : str
        File name under ``templates/``.
    user : SessionUser or None
        The logged-in user; None on the login page and on errors before login.
    status_code : int
        HTTP status of the response.
    **context
        Template variables.

    Returns
    -------
    fastapi.responses.HTMLResponse

    Raises
    ------
    jinja2.TemplateNotFound
        If there is no such template.
    """
    ctx = web_context(request)
    flash = request.session.pop("flash", None)
    values = {
        "user": user,
        "csrf_token": ctx.csrf.token(request.session),
        "csrf_field": CSRF_FIELD,
        "flash": flash,
        "node_ae_title": ctx.settings.dicom.ae_title,
        "now": utcnow(),
        **context,
    }
    return ctx.templates.TemplateResponse(request, template, values, status_code=status_code)


def not_found(request: Request, user: SessionUser, message: str) -> HTMLResponse:
    """The 404 error page with ``message``."""
    return render(request, "error.html", user, 404, title="Not found", message=message)
