"""The dashboard: a FastAPI application with server-rendered Jinja2 pages.

Build it with :func:`create_app`; nothing here is created at import time.
Pages read the job database; the only writes are an operator's requeue or
cancel (through :mod:`dicom_node.jobs.queue`), uploads (through the same
ingest as C-STORE) and logins. Every state-changing request needs a logged-in
user and a valid CSRF token; requeue, cancel and the configuration page need
the admin role.

:func:`create_app` only composes: it builds the shared
:class:`~dicom_node.web.deps.WebContext` (``app.state.ctx``), adds the session
middleware, the security headers and error handlers
(:mod:`dicom_node.web.handlers`), mounts ``/static`` and includes one router
per area from :mod:`dicom_node.web.routes`:

- ``auth``: ``/login``, ``/logout``
- ``overview``: ``/``, ``/api/overview``
- ``jobs``: ``/jobs`` (filters, paging), ``/jobs.csv``, ``/jobs/{id}`` (timeline,
  findings, deliveries, requeue/cancel), ``/api/jobs/{id}``
- ``deliveries``: ``/deliveries``, requeue of one or of every DEAD delivery
- ``viewer``: ``/jobs/{id}/viewer`` (slices with the SEG outlined), slice PNGs
- ``series``: ``/series``, ``/series/{id}``
- ``upload``: ``/upload``
- ``config``: ``/config``, ``/users/unlock``
- ``machine``: ``/metrics``, ``/health``

Importing this module, or calling :func:`create_app`, imports neither
pynetdicom nor TensorFlow/Keras (``tests/web/test_web_imports.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.login_throttle import ThrottlePolicy
from dicom_node.metrics import make_registry
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.resources import DiskWatermark
from dicom_node.receive.spool import Spool
from dicom_node.stats import DestinationMonitor
from dicom_node.web import handlers
from dicom_node.web.deps import WebContext
from dicom_node.web.rendering import (
    format_bytes,
    format_duration_s,
    format_time,
    make_templates,
    package_dir,
)
from dicom_node.web.routes import (
    auth,
    config,
    deliveries,
    jobs,
    machine,
    overview,
    series,
    upload,
    viewer,
)
from dicom_node.web.security import CsrfTokens, session_secret
from dicom_node.web.upload import UploadIngest, UploadLimits
from dicom_node.web.viewer import SliceRenderer

__all__ = ["WebContext", "create_app", "format_bytes", "format_duration_s", "format_time"]

#: The routers in the order their routes are matched.
ROUTERS = (auth, overview, jobs, deliveries, viewer, series, upload, config, machine)


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    registry: CollectorRegistry | None = None,
    workers_alive: Callable[[], int] | None = None,
    monitor: DestinationMonitor | None = None,
) -> FastAPI:
    """Build the dashboard application.

    Parameters
    ----------
    settings : Settings
        ``web`` (sessions, paging, uploads), ``monitoring`` (target, window,
        watermark), ``storage`` (spool, outbox) and ``export.destinations``.
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    registry : prometheus_client.CollectorRegistry or None
        Served at ``/metrics``; a new one (:func:`~dicom_node.metrics.make_registry`)
        when None.
    workers_alive : callable or None
        Number of live worker processes, for ``/health`` and the metrics.
    monitor : DestinationMonitor or None
        C-ECHO results of the destinations, refreshed by the node's scheduler;
        when None the overview checks them itself when older than
        ``monitoring.echo_interval_s``.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    OSError
        If the session secret file cannot be created or read.
    """
    secret = session_secret(settings)
    web = settings.web
    app = FastAPI(
        title="dicom-node",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="dicom_node_session",
        max_age=web.session_max_age_s,
        same_site="strict",
        https_only=web.https_only_cookies,
    )
    spool = Spool(settings.storage.spool_path)
    settings.storage.outbox_path.mkdir(parents=True, exist_ok=True)
    app.state.ctx = WebContext(
        settings=settings,
        session_factory=session_factory,
        csrf=CsrfTokens(secret, web.session_max_age_s),
        templates=make_templates(),
        renderer=SliceRenderer(
            session_factory, settings.storage.spool_path, settings.storage.outbox_path
        ),
        uploader=UploadIngest(
            InstanceIngest(spool, session_factory),
            UploadLimits.from_settings(web),
            DiskWatermark(
                settings.storage.spool_path,
                settings.dicom.min_free_disk_bytes,
                settings.dicom.min_free_disk_percent,
            ),
            settings.storage.base_dir / "upload-tmp",
        ),
        registry=registry or make_registry(session_factory, settings, workers_alive),
        monitor=monitor
        or DestinationMonitor(
            settings.export.destinations,
            settings.dicom.ae_title,
            settings.monitoring.echo_timeout_s,
        ),
        monitor_is_managed=monitor is not None,
        workers_alive=workers_alive,
        throttle=ThrottlePolicy.from_settings(web),
    )
    app.mount("/static", StaticFiles(directory=str(package_dir("static"))), name="static")
    handlers.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
