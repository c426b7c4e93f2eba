"""The dashboard: a FastAPI application with server-rendered Jinja2 pages.

Build it with :func:`create_app`; nothing here is created at import time.
Pages read the job database; the only writes are an operator's requeue or
cancel (through :mod:`dicom_node.jobs.queue`), uploads (through the same
ingest as C-STORE) and logins. Every state-changing request needs a logged-in
user and a valid CSRF token; requeue, cancel and the configuration page need
the admin role.

Endpoints: ``/`` overview, ``/jobs`` (filters, paging, ``/jobs.csv``),
``/jobs/{id}`` (timeline, findings, deliveries, requeue/cancel),
``/jobs/{id}/viewer`` (slices with the SEG outlined), ``/series``,
``/series/{id}``, ``/deliveries``, ``/upload``, ``/config``, ``/login``,
``/logout``, ``/api/overview``, ``/api/jobs/{id}``, ``/metrics``, ``/health``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.db.models import Delivery, Job, JobState, Purge, Series, User, utcnow
from dicom_node.errors import IllegalTransitionError, InvalidQueryError, SeriesPurgedError
from dicom_node.export.exporter import dead_counts, requeue_dead, requeue_delivery
from dicom_node.jobs import queue
from dicom_node.login_throttle import (
    ADDRESS,
    USER,
    ThrottlePolicy,
    active_lockouts,
    clear_failures,
    locked_until,
    record_failure,
    unlock,
)
from dicom_node.metrics import make_registry
from dicom_node.queries import (
    FINDING_FILTERS,
    JobFilter,
    delivery_marks,
    format_study_date,
    job_detail,
    job_detail_json,
    job_summary,
    list_deliveries,
    list_jobs,
    list_series,
    parse_since,
    pipelines_seen,
)
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.resources import DiskWatermark
from dicom_node.receive.spool import Spool
from dicom_node.stats import STAGES, DestinationMonitor, health, overview
from dicom_node.users import authenticate, create_web_session, end_web_session, session_user
from dicom_node.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    CsrfTokens,
    Forbidden,
    LoginRequired,
    SessionUser,
    session_secret,
)
from dicom_node.web.upload import RETRY_AFTER_S, UploadIngest, UploadLimits, UploadRefused
from dicom_node.web.viewer import WINDOWS, SliceRenderer, ViewerUnavailable

logger = logging.getLogger(__name__)

#: Most files in one upload request.
MAX_UPLOAD_FILES = 20000
_STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@dataclass
class WebContext:
    """What the routes share; one per application (no module-level state).

    Parameters
    ----------
    settings : Settings
    session_factory : sqlalchemy.orm.sessionmaker
    csrf : CsrfTokens
    templates : fastapi.templating.Jinja2Templates
    renderer : SliceRenderer
    uploader : UploadIngest
    registry : prometheus_client.CollectorRegistry
    monitor : DestinationMonitor
    monitor_is_managed : bool
        True when the node's scheduler refreshes ``monitor`` (pages then never
        wait for a C-ECHO).
    workers_alive : callable or None
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    csrf: CsrfTokens
    templates: Jinja2Templates
    renderer: SliceRenderer
    uploader: UploadIngest
    registry: CollectorRegistry
    monitor: DestinationMonitor
    monitor_is_managed: bool
    workers_alive: Callable[[], int] | None


def _package_dir(name: str) -> Path:
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
    """``2025-01-31 08:00:12`` (UTC) from an aware datetime or an ISO string."""
    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_package_dir("templates")))
    env = templates.env
    env.filters["dur"] = format_duration_s
    env.filters["bytes"] = format_bytes
    env.filters["ts"] = format_time
    env.filters["da"] = format_study_date
    env.globals["version"] = __version__
    env.globals["stages"] = STAGES
    return templates


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def current_user(request: Request) -> SessionUser:
    """Route dependency: the user of the request's server-side session (``web_session``).

    The signed cookie carries only the session's random id; the row it names is
    looked up on every request, so logout, ``users set-password`` and
    ``users remove`` (which delete rows) end a session even where its cookie was
    copied. Sessions past ``web.session_idle_s`` of inactivity or
    ``web.session_max_age_s`` since login are refused and deleted.

    Raises
    ------
    LoginRequired
        If no one is logged in, or the session was ended, expired or its user deleted.

    References
    ----------
    OWASP Session Management Cheat Sheet (server-side session invalidation and expiry).
    """
    sid = request.session.get("sid")
    if not isinstance(sid, str) or not sid:
        if request.session.get("uid") is not None:
            request.session.clear()  # a cookie from before server-side sessions
        raise LoginRequired()
    ctx = _ctx(request)
    web = ctx.settings.web
    with ctx.session_factory.begin() as session:
        user = session_user(session, sid, web.session_idle_s, web.session_max_age_s)
        found = SessionUser(user.id, user.username, user.role) if user is not None else None
    if found is None:
        request.session.clear()
        raise LoginRequired()
    return found


def admin_user(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """Route dependency: the logged-in user, who must have the admin role.

    Raises
    ------
    Forbidden
        For a viewer.
    """
    if not user.is_admin:
        raise Forbidden(f"user {user.username} has the viewer role; this needs an admin")
    return user


def upload_user(
    request: Request, user: Annotated[SessionUser, Depends(current_user)]
) -> SessionUser:
    """Route dependency: a user allowed to upload (admins; viewers unless disabled).

    Raises
    ------
    Forbidden
        For a viewer when ``web.viewers_may_upload`` is false.
    """
    if not user.is_admin and not _ctx(request).settings.web.viewers_may_upload:
        raise Forbidden("uploads are reserved to admins on this node")
    return user


CurrentUser = Annotated[SessionUser, Depends(current_user)]
AdminUser = Annotated[SessionUser, Depends(admin_user)]

#: Largest row id (SQLite INTEGER and PostgreSQL BIGINT are signed 64-bit).
MAX_ROW_ID = 2**63 - 1
#: A row id in a URL path; out of range is "not found" (404).
RowId = Annotated[int, PathParameter(ge=0, le=MAX_ROW_ID)]
#: A page number in a query string; out of range is a bad request (400).
PageNumber = Annotated[int, Query(ge=1, le=2**31 - 1)]
UploadUser = Annotated[SessionUser, Depends(upload_user)]


async def csrf_protect(request: Request) -> None:
    """Route dependency of every state-changing request: check the CSRF token.

    The token comes from the ``X-CSRF-Token`` header or the ``csrf_token``
    form field. A request larger than ``web.max_upload_bytes`` (plus 1 MiB of
    form overhead) is refused before it is read.

    Raises
    ------
    Forbidden
        If the token is missing, expired or not this session's.
    """
    ctx = _ctx(request)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > ctx.settings.web.max_upload_bytes + (1 << 20):
        raise RequestTooLarge(ctx.settings.web.max_upload_bytes)
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=1000)
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    if not ctx.csrf.valid(request.session, token):
        logger.warning(
            "refused %s %s: missing or invalid CSRF token", request.method, request.url.path
        )
        raise Forbidden("missing or invalid CSRF token: reload the page and try again")


class RequestTooLarge(Exception):  # noqa: N818 - answered with HTTP 413
    """A request body is larger than ``web.max_upload_bytes``.

    Parameters
    ----------
    limit_bytes : int
    """

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the request exceeds {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


def _safe_next(value: str | None) -> str:
    """Only same-site relative paths are followed after login (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.netloc else "…"


def _config_view(settings: Settings) -> dict[str, Any]:
    data = settings.model_dump(mode="json")
    if settings.storage.database_url:
        data["storage"]["database_url"] = make_url(settings.storage.database_url).render_as_string(
            hide_password=True
        )
    for hook in data["notifications"]["webhooks"]:
        hook["url"] = _redact_url(hook["url"])
    data["selection"]["rules"] = [r["name"] for r in data["selection"]["rules"]]
    return data


def _stage_bars(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage rows of the job page: label, ends, duration and the bar's position (%)."""
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
    ctx = WebContext(
        settings=settings,
        session_factory=session_factory,
        csrf=CsrfTokens(secret, web.session_max_age_s),
        templates=_templates(),
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
    )
    app.state.ctx = ctx
    app.mount("/static", StaticFiles(directory=str(_package_dir("static"))), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def render(
        request: Request,
        template: str,
        user: SessionUser | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        flash = request.session.pop("flash", None)
        values = {
            "user": user,
            "csrf_token": ctx.csrf.token(request.session),
            "csrf_field": CSRF_FIELD,
            "flash": flash,
            "node_ae_title": settings.dicom.ae_title,
            "now": utcnow(),
            **context,
        }
        return ctx.templates.TemplateResponse(request, template, values, status_code=status_code)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"detail": "login required"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden):
        return _client_error(request, 403, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        # A path id that cannot exist is "not found"; a bad query value is the client's error.
        errors = exc.errors()
        in_path = any(e.get("loc", ("",))[0] == "path" for e in errors)
        status = 404 if in_path else 400
        message = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ())[1:])}: {e.get('msg', 'invalid')}"
            for e in errors
        )
        return _client_error(request, status, message)

    @app.exception_handler(InvalidQueryError)
    async def _invalid_query(request: Request, exc: InvalidQueryError):
        return _client_error(request, 400, str(exc))

    def _client_error(request: Request, status: int, message: str):
        if request.url.path.startswith("/api/") or request.headers.get("accept", "").startswith(
            "application/json"
        ):
            return JSONResponse({"detail": message}, status_code=status)
        user = None
        if request.session.get("uid") is not None:
            try:
                user = current_user(request)
            except LoginRequired:
                user = None
        title = {403: "Not allowed", 404: "Not found"}.get(status, "Bad request")
        return render(request, "error.html", user, status, title=title, message=message)

    @app.exception_handler(RequestTooLarge)
    async def _too_large(request: Request, exc: RequestTooLarge):
        return JSONResponse({"detail": str(exc)}, status_code=413)

    def not_found(request: Request, user: SessionUser, message: str) -> HTMLResponse:
        return render(request, "error.html", user, 404, title="Not found", message=message)

    # --- login -----------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/"):  # noqa: A002 - the query's name
        if request.session.get("uid") is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return render(request, "login.html", None, next=_safe_next(next), error=None)

    throttle = ThrottlePolicy.from_settings(web)

    @app.post("/login", response_class=HTMLResponse, dependencies=[Depends(csrf_protect)])
    async def login(request: Request):
        form = await request.form()
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        target = _safe_next(str(form.get("next", "/")))

        address = _client(request)

        def check() -> tuple[SessionUser, str] | datetime | None:
            # Throttled per user name and per address (issue 13 item 10; OWASP
            # Authentication Cheat Sheet): a locked name or address is refused before
            # any password check, so guessing goes no faster than the limits allow.
            with session_factory.begin() as session:
                until = locked_until(session, username, address)
                if until is not None:
                    return until
                user = authenticate(session, username, password)
                if user is None:
                    return record_failure(session, username, address, throttle)
                clear_failures(session, user.username)
                sid = create_web_session(session, user.id)
                return SessionUser(user.id, user.username, user.role), sid

        checked = await run_in_threadpool(check)
        if isinstance(checked, datetime):
            logger.warning("refused login for user name %r from %s: locked out until %s",
                           username[:64], address, checked.isoformat(timespec="seconds"))
            wait_s = max(1, int((checked - utcnow()).total_seconds()) + 1)
            response = render(
                request, "login.html", None, 429, next=target,
                error=f"Too many failed logins for this user name or from this address. Logins "
                f"are refused for {max(1, round(wait_s / 60))} more minute(s); an administrator "
                "can lift this with: dicom-node users unlock NAME.",
            )  # fmt: skip
            response.headers["Retry-After"] = str(wait_s)
            return response
        if checked is None:
            logger.warning("failed login for user name %r from %s", username[:64], address)
            return render(
                request, "login.html", None, 401, next=target, error="Wrong user name or password."
            )
        user, sid = checked
        old_sid = request.session.get("sid")
        if isinstance(old_sid, str):
            await run_in_threadpool(_end_session, old_sid)
        request.session.clear()  # a fresh session (and CSRF value) after login
        request.session["uid"] = user.id
        request.session["sid"] = sid
        logger.info("user %s logged in from %s", user.username, _client(request))
        return RedirectResponse(target, status_code=303)

    def _end_session(sid: str | None) -> None:
        with session_factory.begin() as session:
            end_web_session(session, sid)

    @app.post("/logout", dependencies=[Depends(csrf_protect)])
    def logout(request: Request):
        sid = request.session.get("sid")
        _end_session(sid if isinstance(sid, str) else None)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # --- overview --------------------------------------------------------------------------

    def overview_data() -> dict[str, Any]:
        if ctx.monitor_is_managed:
            echo_results = ctx.monitor.snapshot()
        else:
            echo_results = ctx.monitor.refresh_if_stale(settings.monitoring.echo_interval_s)
        with session_factory() as session:
            data = overview(session, settings, echo_results=echo_results)
            recent, _ = list_jobs(session, JobFilter(), limit=8)
            data["recent_jobs"] = [job_summary(job, series) for job, series in recent]
        return data

    @app.get("/", response_class=HTMLResponse)
    def overview_page(request: Request, user: CurrentUser):
        return render(request, "overview.html", user, data=overview_data(), active="overview")

    @app.get("/api/overview")
    def overview_api(user: CurrentUser):
        data = overview_data()
        return JSONResponse(data)

    # --- jobs ------------------------------------------------------------------------------

    def job_filters(
        state: str | None, pipeline: str | None, since: str | None, finding: str | None
    ) -> tuple[JobFilter, list[str]]:
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

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page(
        request: Request,
        user: CurrentUser,
        state: str | None = None,
        pipeline: str | None = None,
        since: str | None = None,
        finding: str | None = None,
        page: PageNumber = 1,
        refresh: Annotated[int | None, Query(ge=0, le=3600)] = None,
    ):
        filters, errors = job_filters(state, pipeline, since, finding)
        with session_factory() as session:
            rows, total = list_jobs(
                session, filters, offset=(page - 1) * web.page_size, limit=web.page_size
            )
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
        pages = max(1, -(-total // web.page_size))
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

    @app.get("/jobs.csv")
    def jobs_csv(
        user: CurrentUser,
        state: str | None = None,
        pipeline: str | None = None,
        since: str | None = None,
        finding: str | None = None,
    ):
        filters, _ = job_filters(state, pipeline, since, finding)
        with session_factory() as session:
            rows, _ = list_jobs(session, filters, limit=100000)
            jobs = [job_summary(job, series) for job, series in rows]
        out = io.StringIO()
        columns = [
            "job_id", "state", "pipeline", "algorithm", "study_date", "accession_number",
            "study_instance_uid", "series_instance_uid", "modality",
            "instances", "attempts", "created_at", "finished_at", "positive", "finding_text",
            "error",
        ]  # fmt: skip
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(jobs)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="jobs.csv"'},
        )

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: RowId, user: CurrentUser):
        with session_factory() as session:
            detail = job_detail(session, job_id, settings.storage.outbox_path)
        if detail is None:
            return not_found(request, user, f"There is no job {job_id}.")
        return render(
            request,
            "job.html",
            user,
            active="jobs",
            job=detail,
            bars=_stage_bars(detail),
            target_s=settings.monitoring.delivery_target_s,
        )

    @app.get("/api/jobs/{job_id}")
    def job_api(job_id: RowId, user: CurrentUser):
        with session_factory() as session:
            detail = job_detail(session, job_id, settings.storage.outbox_path)
        if detail is None:
            return JSONResponse({"detail": f"no job {job_id}"}, status_code=404)
        return JSONResponse(job_detail_json(detail))

    def change_job(
        request: Request, job_id: RowId, user: SessionUser, action: str
    ) -> RedirectResponse | HTMLResponse:
        with session_factory.begin() as session:
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
                    "The files of this series were purged by retention; it cannot be "
                    "analysed again.",
                )
                return RedirectResponse(f"/jobs/{job_id}", status_code=303)
            except IllegalTransitionError:
                word = "requeued" if action == "requeue" else "canceled"
                request.session["flash"] = ("error", f"A {job.state} job cannot be {word}.")
                return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        logger.info("user %s: %s job %d", user.username, action, job_id)
        word = "requeued" if action == "requeue" else "canceled"
        request.session["flash"] = ("ok", f"Job {job_id} {word}.")
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.post("/jobs/{job_id}/requeue", dependencies=[Depends(csrf_protect)])
    def requeue_job(request: Request, job_id: RowId, user: AdminUser):
        return change_job(request, job_id, user, "requeue")

    @app.post("/jobs/{job_id}/cancel", dependencies=[Depends(csrf_protect)])
    def cancel_job(request: Request, job_id: RowId, user: AdminUser):
        return change_job(request, job_id, user, "cancel")

    @app.post("/deliveries/{delivery_id}/requeue", dependencies=[Depends(csrf_protect)])
    async def requeue_delivery_action(request: Request, delivery_id: RowId, user: AdminUser):
        """Admins: a DEAD delivery back to PENDING (``export.exporter.requeue_delivery``)."""
        form = await request.form()
        back = _safe_next(str(form.get("next") or "/deliveries"))

        def change() -> tuple[str, str]:
            with session_factory.begin() as session:
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

    @app.post("/deliveries/requeue-dead", dependencies=[Depends(csrf_protect)])
    async def requeue_dead_action(request: Request, user: AdminUser):
        """Admins: every DEAD delivery (of the form's ``destination``, or all) back to PENDING.

        The bulk form of :func:`requeue_delivery_action`, for after a PACS outage
        (``export.exporter.requeue_dead``); the node also resumes them by itself
        once the destination answers C-ECHO.
        """
        form = await request.form()
        destination = str(form.get("destination") or "") or None

        def change() -> tuple[str, str]:
            with session_factory.begin() as session:
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

    # --- viewer ----------------------------------------------------------------------------

    @app.get("/jobs/{job_id}/viewer", response_class=HTMLResponse)
    def viewer_page(
        request: Request,
        job_id: RowId,
        user: CurrentUser,
        window: str = "brain",
    ):
        window = window if window in WINDOWS else "brain"
        try:
            images = ctx.renderer.job_images(job_id)
        except ViewerUnavailable as err:
            return render(
                request, "error.html", user, 404, title="Nothing to view", message=err.message
            )
        with session_factory() as session:
            detail = job_detail(session, job_id, settings.storage.outbox_path)
        slices = [
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

    @app.get("/jobs/{job_id}/slices/{index}.png")
    def slice_png(
        job_id: RowId,
        index: Annotated[int, PathParameter(ge=0, le=2**31 - 1)],
        user: CurrentUser,
        overlay: int = 0,
        window: str = "brain",
    ):
        if window not in WINDOWS:
            return JSONResponse({"detail": f"unknown window {window!r}"}, status_code=400)
        try:
            png = ctx.renderer.render(job_id, index, overlay=bool(overlay), window=window)
        except ViewerUnavailable as err:
            return JSONResponse({"detail": err.message}, status_code=404)
        except IndexError as err:
            return JSONResponse({"detail": str(err)}, status_code=404)
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
        )

    # --- series and deliveries -------------------------------------------------------------

    @app.get("/series", response_class=HTMLResponse)
    def series_page(
        request: Request,
        user: CurrentUser,
        state: str | None = None,
        page: PageNumber = 1,
    ):
        with session_factory() as session:
            rows, total = list_series(
                session, state=state or None, offset=(page - 1) * web.page_size, limit=web.page_size
            )
            items = [(s, jobs) for s, jobs in rows]
            pages = max(1, -(-total // web.page_size))
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

    @app.get("/series/{series_id}", response_class=HTMLResponse)
    def series_detail(request: Request, series_id: RowId, user: CurrentUser):
        with session_factory() as session:
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

    @app.get("/deliveries", response_class=HTMLResponse)
    def deliveries_page(
        request: Request,
        user: CurrentUser,
        state: str | None = None,
        destination: str | None = None,
        page: PageNumber = 1,
    ):
        with session_factory() as session:
            rows, total = list_deliveries(
                session,
                state=state or None,
                destination=destination or None,
                offset=(page - 1) * web.page_size,
                limit=web.page_size,
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
            pages=max(1, -(-total // web.page_size)),
            state=state or "",
            destination=destination or "",
            destinations=[d.name for d in settings.export.destinations],
            states=["PENDING", "RETRYING", "SENT", "DEAD"],
            dead=dead,
            page_url=lambda n: "/deliveries?" + urlencode({**query, "page": n}),
        )

    # --- upload ----------------------------------------------------------------------------

    @app.get("/upload", response_class=HTMLResponse)
    def upload_page(request: Request, user: UploadUser):
        return render(
            request,
            "upload.html",
            user,
            active="upload",
            max_upload_bytes=web.max_upload_bytes,
            stable_after_s=settings.series.stable_after_s,
        )

    async def upload_slot(request: Request, user: UploadUser):
        """Route dependency, before the body is read: a free upload slot and room on the disk.

        The body is also counted as it is read, so that a request without
        ``Content-Length`` (``Transfer-Encoding: chunked``, which
        :func:`csrf_protect` cannot judge from the headers) is cut off past
        ``web.max_upload_bytes`` plus 1 MiB of form overhead (OWASP File Upload
        Cheat Sheet: limit the request size).

        Raises
        ------
        HTTPException
            503 with ``Retry-After`` when ``web.upload_max_concurrent`` uploads
            run; 507 below the free-disk watermark (``dicom.min_free_disk_*``).
        RequestTooLarge
            While the body is read, once it passes the cap (answered 413).
        """
        limit = web.max_upload_bytes
        receive, received = request._receive, 0  # noqa: SLF001 - Starlette has no public hook

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit + (1 << 20):
                    raise RequestTooLarge(limit)
            return message

        request._receive = counted_receive  # noqa: SLF001
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

    @app.post(
        "/upload",
        response_class=HTMLResponse,
        dependencies=[Depends(upload_slot), Depends(csrf_protect)],
    )
    async def upload(request: Request, user: UploadUser):
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=1000)
        files = [
            (str(item.filename or "upload"), item.file)
            for item in form.getlist("files")
            if hasattr(item, "file") and item.filename
        ]
        if not files:
            return render(
                request,
                "upload.html",
                user,
                400,
                active="upload",
                max_upload_bytes=web.max_upload_bytes,
                stable_after_s=settings.series.stable_after_s,
                error="Choose at least one DICOM file or zip.",
            )
        status = None
        try:
            report = await run_in_threadpool(ctx.uploader.ingest_files, files)
        except UploadRefused as err:  # 413 over a web.upload_* cap, 507 below the watermark
            report, status = err.report, err.status
        logger.info(
            "user %s uploaded %d file(s): %d stored",
            user.username,
            len(report.outcomes),
            report.count("stored"),
        )

        def series_rows() -> list[dict[str, Any]]:
            with session_factory() as session:
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

    # --- configuration ---------------------------------------------------------------------

    @app.get("/config", response_class=HTMLResponse)
    def config_page(request: Request, user: AdminUser):
        with session_factory() as session:
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
            config_json=json.dumps(_config_view(settings), indent=2),
            users=user_rows,
            lockouts=lockouts,
        )

    @app.post("/users/unlock", dependencies=[Depends(csrf_protect)])
    async def unlock_login(request: Request, user: AdminUser):
        """Admins: lift a login lockout (issue 13 item 10), as ``dicom-node users unlock`` does.

        The form sends ``kind`` (``user`` or ``address``) and ``key`` (the user name
        or address). The unlock is audited with the administrator's name and address.
        """
        form = await request.form()
        kind = str(form.get("kind", ""))
        key = str(form.get("key", ""))
        address = _client(request)
        if kind not in (USER, ADDRESS) or not key:
            request.session["flash"] = ("error", "Nothing to unlock.")
            return RedirectResponse("/config", status_code=303)

        def lift() -> bool:
            with session_factory.begin() as session:
                return unlock(
                    session, kind, key, by=f"dashboard user {user.username}", address=address
                )

        lifted = await run_in_threadpool(lift)
        what = "user name" if kind == USER else "address"
        request.session["flash"] = (
            ("ok", f"Login lockout of {what} {key[:64]} lifted.") if lifted
            else ("error", f"The {what} {key[:64]} was not locked out.")
        )  # fmt: skip
        return RedirectResponse("/config", status_code=303)

    # --- machine endpoints -----------------------------------------------------------------

    @app.get("/metrics")
    def metrics(request: Request):
        if web.metrics_require_login:
            current_user(request)
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health_endpoint():
        report = health(session_factory, settings, workers_alive)
        return JSONResponse(report.as_json(), status_code=200 if report.ok else 503)

    return app


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
