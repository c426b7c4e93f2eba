"""Figures about the node, read from the job database: stage durations, latency, health.

The dashboard's overview, ``dicom-node stats`` and ``/metrics`` all use these
functions, so they show the same numbers. Durations come from the timestamps
the node records anyway: the instance times of a series, the ``state_change``
log of every transition (UTC), and the ``sent_at`` of each delivery.

The stages of one run of a job (the latest run when a job was requeued):

============  ====================================  ===============================
stage         from                                  to
============  ====================================  ===============================
receiving     first instance received               last instance received
quiet         last instance received                series COMPLETE
dispatch      series COMPLETE                       job QUEUED
queue         job QUEUED                            job RUNNING (worker claimed it)
analysis      job RUNNING                           job SUCCEEDED (results built)
export        results built                         last delivery SENT
total         last instance received                delivered
============  ====================================  ===============================

"Delivered" is the time the last result object of the run reached its last
destination; with no destinations configured it is the time the results were
built (they stay in the outbox).

A run started by an operator's requeue has no ``dispatch`` and no ``total``
(they would measure the operator's decision, not the node), so the latency
figures count only the runs that followed a series' arrival; its ``run``
duration (queued -> delivered) is shown on the job page instead.

The figures are split by what they are about: :mod:`dicom_node.stats.milestones`
(the stages of one run), :mod:`dicom_node.stats.echo` (C-ECHO reachability of
the destinations) and :mod:`dicom_node.stats.figures` (the overview and the
health check); every name is importable from :mod:`dicom_node.stats`.
"""

from dicom_node.stats.echo import DestinationMonitor, EchoResult, echo_destination
from dicom_node.stats.echo import logger as logger
from dicom_node.stats.figures import (
    HealthReport,
    delivery_figures,
    disk_figures,
    health,
    overview,
)
from dicom_node.stats.figures import _counts as _counts
from dicom_node.stats.figures import _echo_json as _echo_json
from dicom_node.stats.figures import _existing as _existing
from dicom_node.stats.milestones import _STAGE_BOUNDS as _STAGE_BOUNDS
from dicom_node.stats.milestones import STAGES, Milestones, milestones_for_jobs, percentile_s
from dicom_node.stats.milestones import _chunks as _chunks
from dicom_node.stats.milestones import _fill_delivered as _fill_delivered
from dicom_node.stats.milestones import _fill_job_milestones as _fill_job_milestones

__all__ = [
    "STAGES",
    "DestinationMonitor",
    "EchoResult",
    "HealthReport",
    "Milestones",
    "delivery_figures",
    "disk_figures",
    "echo_destination",
    "health",
    "milestones_for_jobs",
    "overview",
    "percentile_s",
]
