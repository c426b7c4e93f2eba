"""Series: ``/series`` (filter by state, paging) and ``/series/{id}`` (its jobs, its purge)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from dicom_node.db.models import Purge, Series
from dicom_node.queries import job_summary, list_series
from dicom_node.web.deps import Context, CurrentUser, PageNumber, RowId
from dicom_node.web.rendering import not_found, render

router = APIRouter()


@router.get("/series", response_class=HTMLResponse)
def series_page(
    request: Request,
    user: CurrentUser,
    ctx: Context,
    state: str | None = None,
    page: PageNumber = 1,
):
    """The series list, newest first, with each series' jobs."""
    page_size = ctx.settings.web.page_size
    with ctx.session_factory() as session:
        rows, total = list_series(
            session, state=state or None, offset=(page - 1) * page_size, limit=page_size
        )
        items = [(s, jobs) for s, jobs in rows]
        pages = max(1, -(-total // page_size))
        return render(
            request,
            "series.html",
            user,
            active="series",
            rows=items,
            total=total,
            page=page,
            pages=pages,
            state=state or "",
            states=["RECEIVING", "COMPLETE", "DISPATCHED", "NOT_ELIGIBLE"],
            page_url=lambda n: "/series?" + urlencode({"state": state or "", "page": n}),
        )


@router.get("/series/{series_id}", response_class=HTMLResponse)
def series_detail(request: Request, series_id: RowId, user: CurrentUser, ctx: Context):
    """One series: its jobs and retention purge; reloads every 3 s until settled; 404 if none."""
    with ctx.session_factory() as session:
        series = session.get(Series, series_id)
        if series is None:
            return not_found(request, user, f"There is no series {series_id}.")
        jobs = sorted(series.jobs, key=lambda j: j.id)
        purge = session.scalar(select(Purge).where(Purge.series_id == series.id))
        settled = series.state in ("NOT_ELIGIBLE",) or (
            series.state == "DISPATCHED"
            and jobs
            and all(j.state in ("SUCCEEDED", "FAILED", "CANCELED") for j in jobs)
        )
        return render(
            request,
            "series_detail.html",
            user,
            active="series",
            series=series,
            study_instance_uid=series.study.study_instance_uid,
            jobs=[job_summary(j, series) for j in jobs],
            purge=purge,
            refresh=None if settled else 3,
        )
