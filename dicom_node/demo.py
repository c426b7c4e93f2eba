"""The demo's cases and its wait for their results (``dicom-node demo``).

The demo runs the whole node on a throw-away folder, sends it the packaged
real head CT and a copy with a synthetic acute bleed, and reports both jobs.
This module holds what the command needs besides printing: the folder, the
settings it overrides, the synthetic case and the wait for finished jobs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import JobState
from dicom_node.errors import ConfigurationError

if TYPE_CHECKING:
    from dicom_node.training.synthetic import SyntheticBleed

#: The file that marks a folder as the demo's, so that a rerun may empty it.
MARKER_NAME = ".dicom-node-demo"
#: Semi-axes of the synthetic bleed's ellipsoid (mm; about 10 mL).
BLEED_SEMI_AXES_MM = (16.0, 12.0, 12.5)
#: Attenuation of the synthetic bleed (HU): acute blood.
BLEED_HU = 65.0
#: Seed of the synthetic case's new UIDs and its lesion.
BLEED_SEED = 2
#: Seconds between two looks at the job database while waiting.
POLL_INTERVAL_S = 0.5


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` (or create it) and mark it as the demo's.

    Raises
    ------
    ConfigurationError
        If ``workdir`` exists, is not empty and is not a demo folder (no
        :data:`MARKER_NAME`): the demo never deletes someone else's files.
    """
    marker = workdir / MARKER_NAME
    if workdir.exists() and any(workdir.iterdir()) and not marker.exists():
        raise ConfigurationError(f"{workdir} exists and is not a demo folder; choose --workdir")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    marker.touch()


def settings_overrides(workdir: Path) -> dict[str, Any]:
    """Settings of the demo's node: data in ``workdir``, a free port, short quiet time, no web.

    The series is complete after 2 s without instances (``stable_after_s``)
    and every sweep runs twice a second, so results come within seconds of
    the analysis.
    """
    return {
        "log_level": "WARNING",
        "storage": {"base_dir": str(workdir.resolve())},
        "dicom": {"port": 0},
        "series": {"stable_after_s": 2.0, "sweep_interval_s": 0.5},
        "workers": {"poll_interval_s": 0.5},
        "export": {"sweep_interval_s": 1.0},
        "web": {"enabled": False},
    }


def write_synthetic_bleed(
    source: Sequence[Path], out_dir: Path
) -> tuple[list[pydicom.Dataset], SyntheticBleed]:
    """Read ``source`` and write a copy with new UIDs and a synthetic acute bleed to ``out_dir``.

    The bleed is an ellipsoid of :data:`BLEED_SEMI_AXES_MM` at :data:`BLEED_HU`
    placed by :func:`~dicom_node.training.synthetic.insert_ellipsoid_hemorrhage`.

    Parameters
    ----------
    source : sequence of pathlib.Path
        The CT series' files.
    out_dir : pathlib.Path
        Folder for the copy (created), one ``<SOPInstanceUID>.dcm`` a slice.

    Returns
    -------
    (list of pydicom.Dataset, SyntheticBleed)
        The source datasets and the synthetic case (``datasets``,
        ``inserted_volume_ml``).
    """
    from dicom_node.series.volume import read_datasets
    from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage, with_new_uids

    original = read_datasets(list(source))
    bleed = insert_ellipsoid_hemorrhage(
        with_new_uids(original, seed=BLEED_SEED),
        center_mm=None,
        semi_axes_mm=BLEED_SEMI_AXES_MM,
        hu=BLEED_HU,
        seed=BLEED_SEED,
    )
    out_dir.mkdir(parents=True)
    for ds in bleed.datasets:
        ds.save_as(out_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return original, bleed


def wait_for_finished_jobs(
    session_factory: sessionmaker[Session],
    series_uids: Mapping[str, str],
    timeout_s: float,
) -> dict[str, int]:
    """Wait until the newest job of each series has SUCCEEDED or FAILED, or ``timeout_s`` passed.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the node's job database.
    series_uids : mapping of str to str
        Case name to Series Instance UID.
    timeout_s : float
        Give up after this many seconds.

    Returns
    -------
    dict of str to int
        Case name to job id, for the cases whose job finished (all of them
        unless the time ran out).
    """
    from dicom_node.queries import latest_job_of_series

    deadline = time.monotonic() + timeout_s
    done: dict[str, int] = {}
    while len(done) < len(series_uids) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        with session_factory() as session:
            for name, uid in series_uids.items():
                job = latest_job_of_series(session, uid)
                if job is not None and job.state in (JobState.SUCCEEDED, JobState.FAILED):
                    done[name] = job.id
    return done
