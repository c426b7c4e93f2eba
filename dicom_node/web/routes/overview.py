"""The overview: ``/`` (page) and ``/api/overview`` (the same figures as JSON)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from dicom_node.queries import JobFilter, job_summary, list_jobs
from dicom_node.stats import overview
from dicom_node.web.deps import Context, CurrentUser, WebContext
from dicom_node.web.rendering import render

router = APIRouter()


def overview_data(ctx: WebContext) -> dict[str, Any]:
    """The overview's figures (:func:`dicom_node.stats.overview`) and the 8 latest jobs.

    The destinations' C-ECHO results are the scheduler's when it manages the
    monitor; otherwise they are refreshed here when older than
    ``monitoring.echo_interval_s``.

    Parameters
    ----------
    ctx : WebContext
        The application's context (settings, sessions, destination monitor).

    Returns
    -------
    dict
        JSON-ready; ``recent_jobs`` holds :func:`~dicom_node.queries.job_summary` rows.
    """
    settings = ctx.settings
    if ctx.monitor_is_managed:
        echo_results = ctx.monitor.snapshot()
    else:
        echo_results = ctx.monitor.refresh_if_stale(settings.monitoring.echo_interval_s)
    with ctx.session_factory() as session:
        data = overview(session, settings, echo_results=echo_results)
        recent, _ = list_jobs(session, JobFilter(), limit=8)
        data["recent_jobs"] = [job_summary(job, series) for job, series in recent]
    return data


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, user: CurrentUser, ctx: Context):
    """The overview page."""
    return render(request, "overview.html", user, data=overview_data(ctx), active="overview")


@router.get("/api/overview")
def overview_api(user: CurrentUser, ctx: Context):
    """The overview's figures as JSON (:func:`overview_data`)."""
    return JSONResponse(overview_data(ctx))
