"""Deliveries: ``/deliveries`` (filters, paging, DEAD counts) and the admins' requeues,
``POST /deliveries/{id}/requeue`` and ``POST /deliveries/requeue-dead``.

The requeues are :mod:`dicom_node.export.exporter`'s, imported when one is
asked for: that module loads the Storage SCU and with it pynetdicom, which the
dashboard does not otherwise need.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from dicom_node.db.models import Delivery
from dicom_node.errors import IllegalTransitionError
from dicom_node.queries import list_deliveries
from dicom_node.web.deps import (
    AdminUser,
    Context,
    CurrentUser,
    PageNumber,
    RowId,
    csrf_protect,
    safe_next,
)
from dicom_node.web.rendering import render

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/deliveries", response_class=HTMLResponse)
def deliveries_page(
    request: Request,
    user: CurrentUser,
    ctx: Context,
    state: str | None = None,
    destination: str | None = None,
    page: PageNumber = 1,
):
    """The deliveries list, filtered by ``state`` and ``destination``, with DEAD counts."""
    from dicom_node.export.exporter import dead_counts  # loads pynetdicom (Storage SCU)

    page_size = ctx.settings.web.page_size
    with ctx.session_factory() as session:
        rows, total = list_deliveries(
            session,
            state=state or None,
            destination=destination or None,
            offset=(page - 1) * page_size,
            limit=page_size,
        )
        dead = dead_counts(session)
    query = {k: v for k, v in {"state": state, "destination": destination}.items() if v}
    return render(
        request,
        "deliveries.html",
        user,
        active="deliveries",
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // page_size)),
        state=state or "",
        destination=destination or "",
        destinations=[d.name for d in ctx.settings.export.destinations],
        states=["PENDING", "RETRYING", "SENT", "DEAD"],
        dead=dead,
        page_url=lambda n: "/deliveries?" + urlencode({**query, "page": n}),
    )


@router.post("/deliveries/{delivery_id}/requeue", dependencies=[Depends(csrf_protect)])
async def requeue_delivery_action(
    request: Request, delivery_id: RowId, user: AdminUser, ctx: Context
):
    """Admins: a DEAD delivery back to PENDING (``export.exporter.requeue_delivery``).

    Answers 303 to the form's ``next`` (same-site paths only, else ``/deliveries``)
    with a flash message saying what happened.
    """
    from dicom_node.export.exporter import requeue_delivery  # loads pynetdicom (Storage SCU)

    form = await request.form()
    back = safe_next(str(form.get("next") or "/deliveries"))

    def change() -> tuple[str, str]:
        with ctx.session_factory.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return "error", f"There is no delivery {delivery_id}."
            try:
                requeue_delivery(session, delivery)
            except IllegalTransitionError:
                return "error", f"A {delivery.state} delivery cannot be requeued."
        logger.info("user %s: requeue delivery %d", user.username, delivery_id)
        return "ok", f"Delivery {delivery_id} requeued."

    request.session["flash"] = await run_in_threadpool(change)
    return RedirectResponse(back, status_code=303)


@router.post("/deliveries/requeue-dead", dependencies=[Depends(csrf_protect)])
async def requeue_dead_action(request: Request, user: AdminUser, ctx: Context):
    """Admins: every DEAD delivery (of the form's ``destination``, or all) back to PENDING.

    The bulk form of :func:`requeue_delivery_action`, for after a PACS outage
    (``export.exporter.requeue_dead``); the node also resumes them by itself
    once the destination answers C-ECHO. Answers 303 to ``/deliveries``.
    """
    from dicom_node.export.exporter import requeue_dead  # loads pynetdicom (Storage SCU)

    form = await request.form()
    destination = str(form.get("destination") or "") or None

    def change() -> tuple[str, str]:
        with ctx.session_factory.begin() as session:
            ids = requeue_dead(session, destination=destination)
        where = f" to {destination}" if destination else ""
        logger.info("user %s: requeue %d DEAD deliveries%s", user.username, len(ids), where)
        if not ids:
            return "error", f"No DEAD delivery{where} to requeue."
        return "ok", f"{len(ids)} DEAD deliveries{where} requeued."

    request.session["flash"] = await run_in_threadpool(change)
    query = f"?{urlencode({'destination': destination})}" if destination else ""
    back = "/deliveries" + query
    return RedirectResponse(back, status_code=303)
