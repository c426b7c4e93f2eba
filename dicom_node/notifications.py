"""Webhook notifications of positive findings.

When a job succeeds with a finding whose ``present`` is true, the worker
records one PENDING :class:`~dicom_node.db.models.Notification` per configured
webhook in the same transaction that marks the job SUCCEEDED. The node's
scheduler then POSTs a JSON message to each (:func:`send_due_notifications`).
Like a delivery, each sweep makes at most one attempt per message whose
``next_attempt_at`` is due and records it in the row (attempts, last error,
HTTP status): a transient failure pushes ``next_attempt_at`` back by the
webhook's :class:`~dicom_node.retry.RetryPolicy` and the message stays
PENDING; after ``max_attempts``, or on a refusal, it is FAILED. No sweep ever
sleeps between attempts, so a slow or failing receiver costs each sweep at
most ``timeout_s`` per due message. A message is sent once per job and webhook.

The message carries UIDs (study, series, result objects), the findings and
a link to the dashboard, but no patient identifiers unless the webhook sets
``include_patient_identifiers = true``; then PatientName, PatientID and
AccessionNumber are read from a source instance in the spool at send time
(they are never stored in the job database).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

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
            next_attempt_at=now,
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
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> NotificationState:
    """Make one attempt at a PENDING notification and record its outcome.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    notification_id : int
        Row id of a PENDING notification.
    settings : Settings
        The webhooks, and what the message needs (see :func:`build_message`).
    client : httpx.Client
        HTTP client for the attempt (bounded by the webhook's ``timeout_s``).
    now : datetime or None
        Time of the attempt (UTC); the next attempt is scheduled from it.
    rng : random.Random or None
        Source of the retry jitter (tests).

    Returns
    -------
    NotificationState
        SENT; FAILED after a refusal or the webhook's last attempt; PENDING
        when a retry is scheduled (``next_attempt_at``), or when its webhook
        is no longer configured (then nothing is attempted).

    Raises
    ------
    sqlalchemy.exc.NoResultFound
        If there is no notification ``notification_id``.
    """
    webhooks = {w.name: w for w in settings.notifications.webhooks}
    with session_factory() as session:
        row = session.get_one(Notification, notification_id)
        webhook = webhooks.get(row.webhook)
        if webhook is None or row.state != NotificationState.PENDING:
            return row.state
        message = build_message(session, session.get_one(Job, row.job_id), settings, webhook)
    status: int | None = None
    error: str | None = None
    permanent = False
    try:
        status = post_message(webhook, message, client)
    except WebhookRefusedError as err:
        error, permanent = str(err), True
    except WebhookError as err:
        error = str(err)
    finished = utcnow() if now is None else now
    policy = webhook.retry_policy()
    with session_factory.begin() as session:
        row = session.get_one(Notification, notification_id)
        row.attempts += 1
        row.response_status = status
        if error is None:
            row.state = NotificationState.SENT
            row.sent_at = finished
            row.last_error = None
            logger.info("job %d: webhook %s notified", row.job_id, row.webhook)
        elif permanent or policy.exhausted(row.attempts):
            row.state = NotificationState.FAILED
            row.last_error = error[:2000]
            logger.warning(
                "job %d: webhook %s failed after %d attempt(s): %s",
                row.job_id, row.webhook, row.attempts, error,
            )  # fmt: skip
        else:
            row.next_attempt_at = policy.next_attempt_at(finished, row.attempts, rng)
            delay_s = (row.next_attempt_at - finished).total_seconds()
            row.last_error = f"{error[:1900]}; next attempt in {delay_s:.1f} s"
            logger.info(
                "job %d: webhook %s attempt %d failed, next in %.1f s: %s",
                row.job_id, row.webhook, row.attempts, delay_s, error,
            )  # fmt: skip
        return row.state


def send_due_notifications(
    session_factory: sessionmaker[Session],
    settings: Settings,
    client: httpx.Client | None = None,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> dict[str, int]:
    """One scheduler pass: one attempt at every PENDING notification that is due.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    settings : Settings
        ``notifications.webhooks``.
    client : httpx.Client or None
        A client to reuse; a new one (closed afterwards) when None.
    now : datetime or None
        Current time (UTC); messages whose ``next_attempt_at`` is at or before
        it are attempted, and their outcome is recorded at it. The clock
        when None.
    rng : random.Random or None
        Source of the retry jitter (tests).

    Returns
    -------
    dict
        Counts by the state each attempted notification is in afterwards
        (``SENT``, ``FAILED``, or ``PENDING`` for a retry scheduled).
    """
    if not settings.notifications.webhooks:
        return {}
    due_by = now or utcnow()
    configured = [w.name for w in settings.notifications.webhooks]
    with session_factory() as session:
        ids = session.scalars(
            select(Notification.id)
            .where(
                Notification.state == NotificationState.PENDING,
                Notification.next_attempt_at <= due_by,
                Notification.webhook.in_(configured),
            )
            .order_by(Notification.id)
        ).all()
    if not ids:
        return {}
    counts: dict[str, int] = {}
    own = client is None
    client = client or httpx.Client()
    try:
        for notification_id in ids:
            state = send_notification(
                session_factory, notification_id, settings, client, now=now, rng=rng
            )
            counts[str(state)] = counts.get(str(state), 0) + 1
    finally:
        if own:
            client.close()
    return counts
