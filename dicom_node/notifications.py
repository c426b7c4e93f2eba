"""Webhook notifications of positive findings.

When a job succeeds with a finding whose ``present`` is true, the worker
records one PENDING :class:`~dicom_node.db.models.Notification` per configured
webhook in the same transaction that marks the job SUCCEEDED. The node's
scheduler then POSTs a JSON message to each (:func:`send_due_notifications`),
retrying with exponential backoff (tenacity), and records the attempts and
the outcome in the row. A message is sent once per job and webhook.

The message carries UIDs (study, series, result objects), the findings and
a link to the dashboard, but no patient identifiers unless the webhook sets
``include_patient_identifiers = true``; then PatientName, PatientID and
AccessionNumber are read from a source instance in the spool at send time
(they are never stored in the job database).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from dicom_node import __version__
from dicom_node.config import Settings, Webhook
from dicom_node.db.models import (
    Instance,
    Job,
    Notification,
    NotificationState,
    ResultObject,
    Series,
    utcnow,
)
from dicom_node.errors import PermanentError, TransientError
from dicom_node.results.summary import has_positive_finding

logger = logging.getLogger(__name__)

#: Value of the ``event`` field of every message.
EVENT_POSITIVE_FINDING = "dicom-node.finding.positive"


class WebhookError(TransientError):
    """A webhook did not accept a message now (network error, timeout, 5xx, 408, 429)."""


class WebhookRefusedError(PermanentError):
    """A webhook refused a message in a way a retry cannot fix (4xx other than 408/429)."""


def queue_notifications(
    session: Session,
    job: Job,
    summary: dict[str, Any],
    webhooks: Sequence[Webhook],
    now: datetime | None = None,
) -> list[Notification]:
    """Record a PENDING notification per webhook if ``summary`` has a positive finding.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        The transaction that marks the job SUCCEEDED; the caller commits.
    job : Job
        The job that succeeded (flushed, with an id).
    summary : dict
        The job's result summary (``findings`` with ``present``).
    webhooks : sequence of Webhook
        The configured webhooks (``notifications.webhooks``).
    now : datetime or None
        Creation time (UTC); the current time when None.

    Returns
    -------
    list of Notification
        The rows created (none when negative, or already notified).
    """
    if not webhooks or not has_positive_finding(summary):
        return []
    now = now or utcnow()
    existing = set(
        session.scalars(select(Notification.webhook).where(Notification.job_id == job.id))
    )
    created = []
    for webhook in webhooks:
        if webhook.name in existing:
            continue
        row = Notification(
            job_id=job.id,
            webhook=webhook.name,
            state=NotificationState.PENDING,
            created_at=now,
        )
        session.add(row)
        created.append(row)
    return created


def build_message(
    session: Session, job: Job, settings: Settings, webhook: Webhook
) -> dict[str, Any]:
    """The JSON body sent to ``webhook`` about ``job``.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    job : Job
        A SUCCEEDED job.
    settings : Settings
        Supplies the node's AE title, the spool and ``web.public_url``.
    webhook : Webhook
        ``include_patient_identifiers`` adds a ``patient`` object.

    Returns
    -------
    dict
    """
    series = job.series  # foreign keys: a job's series and a series' study always exist
    study = series.study
    summary = job.result_summary or {}
    objects = session.scalars(
        select(ResultObject).where(ResultObject.job_id == job.id).order_by(ResultObject.id)
    ).all()
    base = settings.web.public_url.rstrip("/")
    message: dict[str, Any] = {
        "event": EVENT_POSITIVE_FINDING,
        "node": {"ae_title": settings.dicom.ae_title, "version": __version__},
        "job_id": job.id,
        "pipeline": job.pipeline,
        "algorithm": summary.get("algorithm"),
        "findings": summary.get("findings", []),
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "series_description": series.series_description,
        "result_objects": [
            {
                "kind": o.kind,
                "sop_instance_uid": o.sop_instance_uid,
                "series_instance_uid": o.series_instance_uid,
            }
            for o in objects
        ],  # fmt: skip
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "dashboard_url": f"{base}/jobs/{job.id}" if base else None,
        "not_for_diagnostic_use": True,
    }
    if webhook.include_patient_identifiers:
        message["patient"] = _patient_identifiers(session, series, settings)
    return message


def _patient_identifiers(session: Session, series: Series, settings: Settings) -> dict[str, Any]:
    path = session.scalar(select(Instance.path).where(Instance.series_id == series.id).limit(1))
    if path is None:
        return {}
    try:
        ds = pydicom.dcmread(
            settings.storage.spool_path / path,
            stop_before_pixels=True,
            specific_tags=["PatientName", "PatientID", "AccessionNumber"],
        )
    except (OSError, InvalidDicomError) as err:
        logger.warning("series %s: cannot read identifiers: %s", series.series_instance_uid, err)
        return {}
    return {
        "patient_name": str(ds.get("PatientName", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "accession_number": str(ds.get("AccessionNumber", "")),
    }


def post_message(webhook: Webhook, message: dict[str, Any], client: httpx.Client) -> int:
    """POST ``message`` once; return the HTTP status on success (2xx).

    Raises
    ------
    WebhookError
        On a network error, a timeout, or status 408, 429 or 5xx.
    WebhookRefusedError
        On any other non-2xx status.
    """
    headers = {"User-Agent": f"dicom-node/{__version__}"}
    try:
        response = client.post(
            webhook.url, json=message, headers=headers, timeout=webhook.timeout_s
        )
    except httpx.HTTPError as err:
        raise WebhookError(f"{err.__class__.__name__}: {err}") from err
    status = response.status_code
    if 200 <= status < 300:
        return status
    text = response.text[:200]
    if status in (408, 429) or status >= 500:
        raise WebhookError(f"HTTP {status}: {text}")
    raise WebhookRefusedError(f"HTTP {status}: {text}")


def send_notification(
    session_factory: sessionmaker[Session],
    notification_id: int,
    settings: Settings,
    client: httpx.Client,
) -> NotificationState:
    """Send one PENDING notification with retries and record the outcome.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    notification_id : int
        Row id of a PENDING notification.
    settings : Settings
        The webhooks, and what the message needs (see :func:`build_message`).
    client : httpx.Client
        HTTP client used for every attempt.

    Returns
    -------
    NotificationState
        SENT, FAILED, or PENDING when its webhook is no longer configured.

    Raises
    ------
    LookupError
        If there is no notification ``notification_id``, or no job for it.
    """
    webhooks = {w.name: w for w in settings.notifications.webhooks}
    with session_factory() as session:
        row = _notification(session, notification_id)
        webhook = webhooks.get(row.webhook)
        if webhook is None:
            return NotificationState.PENDING
        job = session.get(Job, row.job_id)
        if job is None:
            raise LookupError(f"notification {notification_id}: no job {row.job_id}")
        message = build_message(session, job, settings, webhook)
    attempts = 0
    status: int | None = None
    error: str | None = None
    retrying = Retrying(
        retry=retry_if_exception_type(WebhookError),
        stop=stop_after_attempt(webhook.max_attempts),
        wait=wait_exponential(multiplier=webhook.backoff_initial_s, max=webhook.backoff_max_s),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                attempts += 1
                status = post_message(webhook, message, client)
    except (WebhookError, WebhookRefusedError) as err:
        error = str(err)
    except RetryError as err:  # pragma: no cover - reraise=True re-raises the cause
        error = str(err)
    with session_factory.begin() as session:
        row = _notification(session, notification_id)
        row.attempts += attempts
        row.response_status = status
        if error is None:
            row.state = NotificationState.SENT
            row.sent_at = utcnow()
            row.last_error = None
            logger.info("job %d: webhook %s notified", row.job_id, row.webhook)
        else:
            row.state = NotificationState.FAILED
            row.last_error = error[:2000]
            logger.warning(
                "job %d: webhook %s failed after %d attempt(s): %s",
                row.job_id, row.webhook, attempts, error,
            )  # fmt: skip
        return row.state


def _notification(session: Session, notification_id: int) -> Notification:
    row = session.get(Notification, notification_id)
    if row is None:
        raise LookupError(f"no notification {notification_id}")
    return row


def send_due_notifications(
    session_factory: sessionmaker[Session],
    settings: Settings,
    client: httpx.Client | None = None,
) -> dict[str, int]:
    """Send every PENDING notification (one scheduler pass).

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    settings : Settings
        ``notifications.webhooks``.
    client : httpx.Client or None
        A client to reuse; a new one (closed afterwards) when None.

    Returns
    -------
    dict
        Counts by the state each notification ended in.
    """
    if not settings.notifications.webhooks:
        return {}
    with session_factory() as session:
        ids = session.scalars(
            select(Notification.id)
            .where(Notification.state == NotificationState.PENDING)
            .order_by(Notification.id)
        ).all()
    if not ids:
        return {}
    counts: dict[str, int] = {}
    own = client is None
    client = client or httpx.Client()
    try:
        for notification_id in ids:
            state = send_notification(session_factory, notification_id, settings, client)
            counts[str(state)] = counts.get(str(state), 0) + 1
    finally:
        if own:
            client.close()
    return counts
