"""Jobs: ``/jobs`` (filters, paging), ``/jobs.csv``, ``/jobs/{id}``, ``/api/jobs/{id}``
and the admins' ``POST /jobs/{id}/requeue`` and ``POST /jobs/{id}/cancel``.

Reads go through :mod:`dicom_node.queries` (the job page and ``/api/jobs/{id}``
both through :func:`~dicom_node.queries.job_detail`); requeue and cancel
through :mod:`dicom_node.jobs.queue`, whose transition table refuses what a
job's state does not allow.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dicom_node.db.models import Job, JobState
from dicom_node.errors import IllegalTransitionError, SeriesPurgedError
from dicom_node.jobs import queue
from dicom_node.queries import (
    FINDING_FILTERS,
    JobFilter,
    delivery_marks,
    job_detail,
    job_detail_for,
    job_detail_json,
    job_summary,
    list_jobs,
    parse_since,
    pipelines_seen,
)
from dicom_node.web.deps import (
    AdminUser,
    Context,
    CurrentUser,
    PageNumber,
    RowId,
    WebContext,
    csrf_protect,
)
from dicom_node.web.rendering import not_found, render
from dicom_node.web.security import SessionUser

logger = logging.getLogger(__name__)

router = APIRouter()

#: Columns of ``/jobs.csv``, in order (keys of :func:`~dicom_node.queries.job_summary`).
CSV_COLUMNS = [
    "job_id", "state", "pipeline", "algorithm", "study_date", "accession_number",
    "study_instance_uid", "series_instance_uid", "modality",
    "instances", "attempts", "created_at", "finished_at", "positive", "finding_text",
    "error",
]  # fmt: skip


def job_filters(
    state: str | None, pipeline: str | None, since: str | None, finding: str | None
) -> tuple[JobFilter, list[str]]:
    """The jobs list's filter from its query values; a bad value is dropped and reported.

    Parameters
    ----------
    state, pipeline, since, finding : str or None
        Query values; ``since`` as :func:`~dicom_node.queries.parse_since` reads it,
        ``finding`` one of :data:`~dicom_node.queries.FINDING_FILTERS`.

    Returns
    -------
    tuple of (JobFilter, list of str)
        The filter, and one message per value that was ignored.
    """
    errors = []
    try:
        since_at = parse_since(since)
    except ValueError as err:
        errors.append(str(err))
        since_at = None
    if finding and finding not in FINDING_FILTERS:
        errors.append(f"unknown finding filter {finding!r}")
        finding = None
    if state and state.upper() not in {s.value for s in JobState}:
        errors.append(f"unknown state {state!r}")
        state = None
    return JobFilter(state or None, pipeline or None, since_at, finding or None), errors


def stage_bars(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage rows of the job page: label, ends, duration (s) and the bar's position (%).

    Parameters
    ----------
    detail : dict
        A :func:`~dicom_node.queries.job_detail` document.

    Returns
    -------
    list of dict
        ``stage``, ``from``, ``to`` and, where both ends are known, ``duration_s``,
        ``left_pct`` and ``width_pct``; empty when the job has no milestones.
    """
    m = detail["milestones"]
    if m is None:
        return []
    labels = {
        "receiving": ("first instance", "last instance"),
        "quiet": ("last instance", "series complete"),
        "dispatch": ("series complete", "queued"),
        "queue": ("queued", "started"),
        "analysis": ("started", "results built"),
        "export": ("results built", "delivered"),
    }
    bounds = {
        "receiving": (m.first_instance, m.last_instance),
        "quiet": (m.last_instance, m.complete),
        "dispatch": (None, None) if m.requeued else (m.complete, m.queued),
        "queue": (m.queued, m.started),
        "analysis": (m.started, m.results),
        "export": (m.results, m.delivered),
    }
    if m.requeued:  # the operator's pause would squash every other bar
        bounds = {k: v for k, v in bounds.items() if k not in ("receiving", "quiet", "dispatch")}
    times = [t for pair in bounds.values() for t in pair if t is not None]
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1e-6)
    rows = []
    for stage, (a, b) in bounds.items():
        row: dict[str, Any] = {"stage": stage, "from": labels[stage][0], "to": labels[stage][1]}
        if a is not None and b is not None:
            row["duration_s"] = max(0.0, (b - a).total_seconds())
            row["left_pct"] = 100 * (a - start).total_seconds() / span
            row["width_pct"] = max(0.4, 100 * row["duration_s"] / span)
        rows.append(row)
    return rows


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    user: CurrentUser,
    ctx: Context,
    state: str | None = None,
    pipeline: str | None = None,
    since: str | None = None,
    finding: str | None = None,
    page: PageNumber = 1,
    refresh: Annotated[int | None, Query(ge=0, le=3600)] = None,
):
    """The jobs list: filters, paging, undelivered marks; ``refresh`` (s, at least 2) reloads."""
    page_size = ctx.settings.web.page_size
    filters, errors = job_filters(state, pipeline, since, finding)
    with ctx.session_factory() as session:
        rows, total = list_jobs(session, filters, offset=(page - 1) * page_size, limit=page_size)
        jobs = delivery_marks(session, [job_summary(job, series) for job, series in rows])
        pipelines = pipelines_seen(session)
    query = {
        k: v
        for k, v in {
            "state": state, "pipeline": pipeline, "since": since, "finding": finding,
            "refresh": refresh,
        }.items()
        if v
    }  # fmt: skip
    pages = max(1, -(-total // page_size))
    return render(
        request,
        "jobs.html",
        user,
        active="jobs",
        jobs=jobs,
        total=total,
        page=page,
        pages=pages,
        query=query,
        query_string=urlencode(query),
        page_url=lambda n: "/jobs?" + urlencode({**query, "page": n}),
        states=[s.value for s in JobState],
        pipelines=pipelines,
        findings=FINDING_FILTERS,
        errors=errors,
        refresh=refresh if refresh and refresh >= 2 else None,
    )


@router.get("/jobs.csv")
def jobs_csv(
    user: CurrentUser,
    ctx: Context,
    state: str | None = None,
    pipeline: str | None = None,
    since: str | None = None,
    finding: str | None = None,
):
    """The filtered jobs (at most 100000) as CSV, columns :data:`CSV_COLUMNS`."""
    filters, _ = job_filters(state, pipeline, since, finding)
    with ctx.session_factory() as session:
        rows, _ = list_jobs(session, filters, limit=100000)
        jobs = [job_summary(job, series) for job, series in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(jobs)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="jobs.csv"'},
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: RowId, user: CurrentUser, ctx: Context):
    """One job: timeline, stage bars, findings, deliveries, requeue/cancel; 404 if none."""
    with ctx.session_factory() as session:
        detail = job_detail(session, job_id, ctx.settings.storage.outbox_path)
    if detail is None:
        return not_found(request, user, f"There is no job {job_id}.")
    return render(
        request,
        "job.html",
        user,
        active="jobs",
        job=job_detail_for(detail, is_admin=user.is_admin),
        bars=stage_bars(detail),
        target_s=ctx.settings.monitoring.delivery_target_s,
    )


@router.get("/api/jobs/{job_id}")
def job_api(job_id: RowId, user: CurrentUser, ctx: Context):
    """One job as JSON: ``job_detail_json`` of :func:`~dicom_node.queries.job_detail`.

    Answers 404 ``{"detail": "no job N"}`` when there is no such job. The
    ``traceback`` of a failed attempt is there for admins only (None for viewers).
    """
    with ctx.session_factory() as session:
        detail = job_detail(session, job_id, ctx.settings.storage.outbox_path)
    if detail is None:
        return JSONResponse({"detail": f"no job {job_id}"}, status_code=404)
    return JSONResponse(job_detail_json(job_detail_for(detail, is_admin=user.is_admin)))


def _change_job(
    request: Request, ctx: WebContext, job_id: int, user: SessionUser, action: str
) -> RedirectResponse | HTMLResponse:
    with ctx.session_factory.begin() as session:
        job = session.get(Job, job_id)
        if job is None:
            return not_found(request, user, f"There is no job {job_id}.")
        try:
            if action == "requeue":
                queue.requeue(session, job)
            else:
                queue.cancel(session, job)
        except SeriesPurgedError:
            request.session["flash"] = (
                "error",
                "The files of this series were purged by retention; it cannot be analysed again.",
            )
            return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        except IllegalTransitionError:
            word = "requeued" if action == "requeue" else "canceled"
            request.session["flash"] = ("error", f"A {job.state} job cannot be {word}.")
            return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        running = job.state == JobState.RUNNING
    logger.info("user %s: %s job %d", user.username, action, job_id)
    word = "requeued" if action == "requeue" else "canceled"
    message = f"Job {job_id} {word}."
    if action == "cancel" and running:
        message = (
            f"Cancel of job {job_id} requested: the worker stops it at its next stage "
            "and sends no results."
        )
    request.session["flash"] = ("ok", message)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/requeue", dependencies=[Depends(csrf_protect)])
def requeue_job(request: Request, job_id: RowId, user: AdminUser, ctx: Context):
    """Admins: the job back to the queue (:func:`dicom_node.jobs.queue.requeue`); 303 back."""
    return _change_job(request, ctx, job_id, user, "requeue")


@router.post("/jobs/{job_id}/cancel", dependencies=[Depends(csrf_protect)])
def cancel_job(request: Request, job_id: RowId, user: AdminUser, ctx: Context):
    """Admins: cancel the job, or ask a running one to stop (:func:`dicom_node.jobs.queue.cancel`).

    Answers 303 back to the job page.
    """
    return _change_job(request, ctx, job_id, user, "cancel")
