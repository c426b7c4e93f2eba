"""Machine endpoints: ``/metrics`` (Prometheus text format) and ``/health`` (JSON)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node.stats import health
from dicom_node.web.deps import Context, current_user

router = APIRouter()


@router.get("/metrics")
def metrics(request: Request, ctx: Context):
    """The application's registry; needs a login when ``web.metrics_require_login``.

    Raises
    ------
    LoginRequired
        If a login is required and no one is logged in (answered 401).
    """
    if ctx.settings.web.metrics_require_login:
        current_user(request)
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health")
def health_endpoint(ctx: Context):
    """:func:`dicom_node.stats.health` as JSON: 200 when healthy, else 503."""
    report = health(ctx.session_factory, ctx.settings, ctx.workers_alive)
    return JSONResponse(report.as_json(), status_code=200 if report.ok else 503)
