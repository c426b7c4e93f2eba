"""Series completeness: stack and count evidence, and the rules of early completion on DB rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Association,
    AssociationOutcome,
    Instance,
    Series,
    SeriesState,
    StateChange,
    Study,
    utcnow,
)
from dicom_node.receive.header import parse_header, position_along_normal
from dicom_node.series.completeness import (
    count_evidence,
    mark_proven_series_complete,
    mark_stable_series_complete,
    stack_evidence,
)


def positions_of(folder: Path) -> list[float]:
    """Slice positions along the normal of a real series, as the receive path records them."""
    positions = []
    for path in sorted(folder.iterdir()):
        header = parse_header(path.read_bytes())
        positions.append(
            position_along_normal(header.image_position_patient, header.image_orientation_patient)
        )
    return positions


def test_even_real_stack_is_proven(shared_data):
    evidence = stack_evidence(positions_of(shared_data / "head-phantom-philips" / "S2010"))
    assert evidence.proven, evidence.reason
    assert evidence.reason == "28 slices, even 5.000 mm steps"


def test_uneven_ge_head_proves_nothing(head_ct_dir):
    """4 mm steps, a 1.08 mm overlap, then 7 mm steps: not an even stack."""
    evidence = stack_evidence(positions_of(head_ct_dir))
    assert not evidence.proven
    assert evidence.reason.startswith("uneven steps: 1.081 to 6.999 mm")


def test_a_missing_slice_breaks_the_stack(shared_data):
    positions = sorted(positions_of(shared_data / "head-phantom-philips" / "S2010"))
    del positions[10]
    assert not stack_evidence(positions).proven
    # Missing slices at either end cannot be seen: the rest is still an even stack.
    assert stack_evidence(positions[11:]).proven


@pytest.mark.parametrize(
    ("positions", "reason"),
    [
        ([0.0, 1.0], "2 slice(s), fewer than 3"),
        ([0.0, 1.0, None], "1 instance(s) without a position on the normal"),
        ([0.0, 1.0, 1.0, 2.0], "two slices at the same position"),
    ],
)
def test_stack_evidence_refuses(positions, reason):
    evidence = stack_evidence(positions)
    assert not evidence.proven and evidence.reason == reason


def test_tiny_rounding_in_positions_is_tolerated():
    positions = [0.0, 0.625, 1.2501, 1.875, 2.4999, 3.125]
    assert stack_evidence(list(reversed(positions))).proven


def test_count_evidence():
    assert count_evidence([28] * 28, [1] * 28) == "ImagesInAcquisition: 28 of 28 instances received"
    assert count_evidence([28] * 27, [1] * 27) is None
    assert count_evidence([28] * 27 + [None], [1] * 28) is None
    assert count_evidence([4] * 28, [1] * 28) is None  # one rotation of a sequential scan
    assert count_evidence([None], [120]) == "multi-frame: one instance with 120 frames"
    assert count_evidence([None, None], [60, 60]) is None


# ------------------------------------------------------------------ DB rules
@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield make_session_factory(engine)
    engine.dispose()


def add_series(session, uid: str, positions, *, calling="CT", carriers=None, iia=None):
    """A RECEIVING series whose instances were carried by ``carriers`` (association rows)."""
    study = session.scalar(select(Study)) or Study(study_instance_uid="1.2.3")
    session.add(study)
    session.flush()
    series = Series(study_id=study.id, series_instance_uid=uid, instance_count=len(positions))
    session.add(series)
    session.flush()
    carriers = carriers or [add_association(session, calling)]
    for i, position in enumerate(positions):
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=f"{uid}.{i + 1}",
                sop_class_uid="1.2",
                transfer_syntax_uid="1.2",
                path="x",
                size_bytes=1,
                calling_ae_title=calling,
                slice_position_mm=position,
                images_in_acquisition=iia,
                association_id=carriers[i % len(carriers)].id,
            )
        )
    return series


def add_association(session, calling="CT", *, closed_s_ago=5.0, outcome="RELEASED"):
    now = utcnow()
    row = Association(
        calling_ae_title=calling,
        opened_at=now - timedelta(seconds=60),
        closed_at=None if closed_s_ago is None else now - timedelta(seconds=closed_s_ago),
        outcome=None if outcome is None else AssociationOutcome(outcome),
    )
    session.add(row)
    session.flush()
    return row


def proven(factory, grace_s=2.0, across_associations=True):
    with factory.begin() as session:
        return [
            s.series_instance_uid
            for s in mark_proven_series_complete(
                session, release_grace_s=grace_s, across_associations=across_associations
            )
        ]


EVEN = [5.0 * i for i in range(28)]


def test_released_even_stack_completes_with_its_basis(factory):
    with factory.begin() as session:
        add_series(session, "1.2.3.1", EVEN)
    assert proven(factory) == ["1.2.3.1"]
    with factory() as session:
        series = session.scalars(select(Series)).one()
        assert series.state == SeriesState.COMPLETE
        assert series.completion_basis.startswith(
            "geometry: 28 slices, even 5.000 mm steps; 1 association(s) released, the last 5."
        )
        change = session.scalars(
            select(StateChange).where(StateChange.to_state == "COMPLETE")
        ).one()
        assert change.reason == series.completion_basis


@pytest.mark.parametrize(
    ("association", "why"),
    [
        ({"closed_s_ago": None, "outcome": None}, "still open"),
        ({"closed_s_ago": 0.5}, "released within the grace time"),
        ({"outcome": "ABORTED"}, "aborted"),
        ({"outcome": "LOST"}, "cut by a restart"),
    ],
)
def test_no_completion_while_the_association_may_carry_more(factory, association, why):
    with factory.begin() as session:
        add_series(session, "1.2.3.1", EVEN, carriers=[add_association(session, **association)])
    assert proven(factory) == [], why


def test_a_fresh_association_of_the_same_sender_holds_the_series(factory):
    """A sender that opens one association per instance is between two of them."""
    with factory.begin() as session:
        add_series(session, "1.2.3.1", EVEN, calling="CT")
        add_association(session, "CT", closed_s_ago=None, outcome=None)  # nothing stored yet
    assert proven(factory) == []
    with factory.begin() as session:  # another sender's open association does not matter
        for row in session.scalars(select(Association).where(Association.closed_at.is_(None))):
            row.calling_ae_title = "OTHER"
    assert proven(factory) == ["1.2.3.1"]


def test_series_over_several_associations_waits_for_all(factory):
    with factory.begin() as session:
        first = add_association(session, closed_s_ago=10)
        second = add_association(session, closed_s_ago=None, outcome=None)
        add_series(session, "1.2.3.1", EVEN, carriers=[first, second])
    assert proven(factory) == []
    with factory.begin() as session:
        row = session.get(Association, second.id)
        row.closed_at, row.outcome = utcnow() - timedelta(seconds=3), AssociationOutcome.RELEASED
    assert proven(factory) == ["1.2.3.1"]
    with factory() as session:
        assert "2 association(s) released" in session.scalars(select(Series)).one().completion_basis


def test_uneven_stack_waits_unless_images_in_acquisition_proves_it(factory, head_ct_dir):
    ge = positions_of(head_ct_dir)
    with factory.begin() as session:
        add_series(session, "1.2.3.1", ge)
        add_series(session, "1.2.3.2", ge, iia=28)
        add_series(session, "1.2.3.3", ge[:20], iia=28)
    assert proven(factory) == ["1.2.3.2"]
    with factory() as session:
        basis = (
            session.scalars(select(Series).where(Series.series_instance_uid == "1.2.3.2"))
            .one()
            .completion_basis
        )
    assert basis.startswith("ImagesInAcquisition: 28 of 28 instances received")


def test_untracked_instances_leave_it_to_the_quiet_time(factory):
    with factory.begin() as session:
        series = add_series(session, "1.2.3.1", EVEN)
        session.flush()
        for instance in session.scalars(select(Instance)):
            instance.association_id = None
        series.last_instance_at = utcnow() - timedelta(seconds=30)
    assert proven(factory) == []
    with factory.begin() as session:
        done = mark_stable_series_complete(session, 10.0)
        assert [s.completion_basis.startswith("quiet time:") for s in done] == [True]


def test_header_values_of_a_real_instance(head_ct_dir):
    ds = pydicom.dcmread(head_ct_dir / "01.dcm", stop_before_pixels=True)
    header = parse_header((head_ct_dir / "01.dcm").read_bytes())
    assert header.image_position_patient == tuple(float(v) for v in ds.ImagePositionPatient)
    assert header.images_in_acquisition is None


def test_a_series_of_several_associations_is_not_proven_by_default(factory):
    """One instance per association (a router), an even stack: by default only the quiet
    time completes it; with proof across associations it completes early."""
    with factory.begin() as session:
        carriers = [add_association(session, closed_s_ago=10.0) for _ in range(14)]
        add_series(session, "1.2.3.77", EVEN[:14], carriers=carriers)
    assert proven(factory, across_associations=False) == []
    assert proven(factory, across_associations=True) == ["1.2.3.77"]
