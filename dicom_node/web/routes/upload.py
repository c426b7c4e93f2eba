"""Upload: ``GET /upload`` (the form) and ``POST /upload`` (files or zips of them).

The files enter the node through :class:`~dicom_node.web.upload.UploadIngest`,
the same ingest as C-STORE. :func:`upload_slot` runs before the body is read.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from dicom_node.db.models import Series
from dicom_node.web.deps import (
    FORM_OVERHEAD_BYTES,
    MAX_UPLOAD_FILES,
    Context,
    RequestTooLarge,
    UploadUser,
    csrf_protect,
    web_context,
)
from dicom_node.web.rendering import render
from dicom_node.web.upload import RETRY_AFTER_S, UploadRefused

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, user: UploadUser, ctx: Context):
    """The upload form."""
    return render(
        request,
        "upload.html",
        user,
        active="upload",
        max_upload_bytes=ctx.settings.web.max_upload_bytes,
        stable_after_s=ctx.settings.series.stable_after_s,
    )


async def upload_slot(request: Request, user: UploadUser):
    """Route dependency, before the body is read: a free upload slot and room on the disk.

    The body is also counted as it is read, so that a request without
    ``Content-Length`` (``Transfer-Encoding: chunked``, which
    :func:`~dicom_node.web.deps.csrf_protect` cannot judge from the headers) is
    cut off past ``web.max_upload_bytes`` plus 1 MiB of form overhead (OWASP File
    Upload Cheat Sheet: limit the request size).

    Raises
    ------
    HTTPException
        503 with ``Retry-After`` when ``web.upload_max_concurrent`` uploads
        run; 507 below the free-disk watermark (``dicom.min_free_disk_*``).
    RequestTooLarge
        While the body is read, once it passes the cap (answered 413).
    """
    ctx = web_context(request)
    limit = ctx.settings.web.max_upload_bytes
    receive, received = request._receive, 0  # Starlette has no public hook

    async def counted_receive():
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit + FORM_OVERHEAD_BYTES:
                raise RequestTooLarge(limit)
        return message

    request._receive = counted_receive
    uploader = ctx.uploader
    if not uploader.try_acquire():
        raise HTTPException(
            503,
            f"{uploader.limits.max_concurrent} uploads are running "
            "(web.upload_max_concurrent); try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        length = request.headers.get("content-length", "")
        try:
            uploader.check_room(int(length) if length.isdigit() else 0)
        except UploadRefused as err:
            raise HTTPException(err.status, err.message) from err
        yield
    finally:
        uploader.release()


@router.post(
    "/upload",
    response_class=HTMLResponse,
    dependencies=[Depends(upload_slot), Depends(csrf_protect)],
)
async def upload(request: Request, user: UploadUser, ctx: Context):
    """Store the form's ``files``; the report page lists each file's outcome and the series.

    Answers 200 when something was stored (or was already there), 400 when
    nothing was, 413 over a ``web.upload_*`` cap, 507 below the disk watermark.
    """
    settings = ctx.settings
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=1000)
    files = [
        (str(item.filename or "upload"), item.file)
        for item in form.getlist("files")
        if isinstance(item, UploadFile) and item.filename
    ]
    if not files:
        return render(
            request,
            "upload.html",
            user,
            400,
            active="upload",
            max_upload_bytes=settings.web.max_upload_bytes,
            stable_after_s=settings.series.stable_after_s,
            error="Choose at least one DICOM file or zip.",
        )
    status = None
    try:
        report = await run_in_threadpool(ctx.uploader.ingest_files, files)
    except UploadRefused as err:  # 413 over a web.upload_* cap, 507 below the watermark
        if err.report is None:  # ingest_files sets it before re-raising
            raise
        report, status = err.report, err.status
    logger.info(
        "user %s uploaded %d file(s): %d stored",
        user.username,
        len(report.outcomes),
        report.count("stored"),
    )

    def series_rows() -> list[dict[str, Any]]:
        with ctx.session_factory() as session:
            out = []
            for uid in report.series_instance_uids:
                series = session.scalar(select(Series).where(Series.series_instance_uid == uid))
                if series is not None:
                    out.append(
                        {
                            "id": series.id,
                            "series_instance_uid": uid,
                            "description": series.series_description,
                            "instances": series.instance_count,
                            "state": str(series.state),
                        }
                    )
            return out

    rows = await run_in_threadpool(series_rows)
    if status is None:
        status = 200 if report.count("stored") or report.count("duplicate") else 400
    return render(
        request,
        "upload_result.html",
        user,
        status,
        active="upload",
        report=report,
        series=rows,
        stable_after_s=settings.series.stable_after_s,
    )
