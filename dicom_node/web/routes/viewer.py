"""The slice viewer: ``/jobs/{id}/viewer`` and ``/jobs/{id}/slices/{index}.png``.

Slices are rendered by the application's
:class:`~dicom_node.web.viewer.SliceRenderer`, with the job's SEG outlined
when ``overlay`` is set.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dicom_node.queries import job_detail
from dicom_node.web.deps import Context, CurrentUser, RowId
from dicom_node.web.rendering import render
from dicom_node.web.viewer import WINDOWS, ViewerUnavailable

router = APIRouter()

#: A slice index in a URL path.
SliceIndex = Annotated[int, PathParameter(ge=0, le=2**31 - 1)]


@router.get("/jobs/{job_id}/viewer", response_class=HTMLResponse)
def viewer_page(
    request: Request,
    job_id: RowId,
    user: CurrentUser,
    ctx: Context,
    window: str = "brain",
):
    """The viewer page, opened on the slice with the largest lesion; 404 with nothing to view."""
    window = window if window in WINDOWS else "brain"
    try:
        images = ctx.renderer.job_images(job_id)
    except ViewerUnavailable as err:
        return render(
            request, "error.html", user, 404, title="Nothing to view", message=err.message
        )
    with ctx.session_factory() as session:
        detail = job_detail(session, job_id, ctx.settings.storage.outbox_path)
    slices: list[dict[str, Any]] = [
        {
            "index": s.index,
            "sop_instance_uid": s.sop_instance_uid,
            "position_mm": round(s.position_mm, 2),
            "mask_pixels": s.mask_pixels,
            "mask_area_mm2": round(s.mask_area_mm2, 1),
        }
        for s in images.slices
    ]
    return render(
        request,
        "viewer.html",
        user,
        active="jobs",
        job=detail,
        images=images,
        slices=slices,
        start=images.best_index,
        window=window,
        windows=list(WINDOWS),
        lesion_slices=[s["index"] for s in slices if s["mask_pixels"] > 0],
    )


@router.get("/jobs/{job_id}/slices/{index}.png")
def slice_png(
    job_id: RowId,
    index: SliceIndex,
    user: CurrentUser,
    ctx: Context,
    overlay: int = 0,
    window: str = "brain",
):
    """One slice as PNG in ``window``, the SEG outlined when ``overlay``; 400/404 as JSON."""
    if window not in WINDOWS:
        return JSONResponse({"detail": f"unknown window {window!r}"}, status_code=400)
    try:
        png = ctx.renderer.render(job_id, index, overlay=bool(overlay), window=window)
    except ViewerUnavailable as err:
        return JSONResponse({"detail": err.message}, status_code=404)
    except IndexError as err:
        return JSONResponse({"detail": str(err)}, status_code=404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
