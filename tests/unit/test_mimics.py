"""Hard mimics of hemorrhage and scanner variety on the real GE head CT (issue 12)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from dicom_node.errors import NotAnalysableError
from dicom_node.imaging.head_ct import check_head_ct
from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume
from dicom_node.training import lesions, mimics
from dicom_node.training.anatomy import HeadAnatomy, derive_anatomy
from dicom_node.training.evaluate_ich import evaluation_plan
from dicom_node.training.ich_data import (
    ModelGridCase,
    downsample_volume,
    load_base_volume,
    load_cases,
    save_cases,
)
from dicom_node.training.landmarks import nearest_slice, slice_pixel
from dicom_node.training.lesions import insert_lesion, make_case

EPIDURAL, SUBDURAL, SUBARACHNOID, INTRAPARENCHYMAL, INTRAVENTRICULAR = ICH_SUBTYPES

#: sha256 of make_case(head, anatomy, seed=...).volume.hu (and .labels) on the full-resolution
#: GE head, computed on the code *before* mimics existed: the default path must not move.
SEED_3_HU_SHA256 = "769c88c43433b41e28bab6155c3443e3cafc91d33153d931e11f3e2ad268289d"
SEED_3_LABELS_SHA256 = "e4e5749032a5163c45125eccf3e8598ba5ed840df442c97e1d5ad4ad84359605"
SEED_8_HU_SHA256 = "060ebc68999d06333cac804a5d70e998a6c1e69a4acc627b7c6d4ef540fbe541"
SEED_8_LABELS_SHA256 = "8536b2087f2d9a2ee75aaae44fdd24f076a6e023c9a86996b4a232262a0d33de"


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def head(head_ct_dir: Path) -> CTVolume:
    return load_base_volume(head_ct_dir)


@pytest.fixture(scope="module")
def anatomy(head) -> HeadAnatomy:
    return derive_anatomy(head)


@pytest.fixture(scope="module")
def half(head) -> CTVolume:
    return downsample_volume(head, 2)  # 256 x 256, 0.98 mm pixels


@pytest.fixture(scope="module")
def half_anatomy(half) -> HeadAnatomy:
    return derive_anatomy(half)


def _insert(volume, anatomy, names, seed):
    hu = volume.hu.astype(np.float32, copy=True)
    specs = mimics.insert_mimics(hu, volume, anatomy, names, np.random.default_rng(seed))
    return hu, specs


def _ventricle_centre_mm(volume, anatomy) -> np.ndarray:
    k, r, c = np.nonzero(anatomy.ventricles)
    return np.mean(
        [
            volume.patient_coordinates(int(kk))[rr, cc]
            for kk, rr, cc in zip(k[::25], r[::25], c[::25], strict=True)
        ],
        axis=0,
    )


def _lateral_mm(volume, anatomy, point) -> float:
    """Signed column offset (mm, towards the patient's left) from the middle of the skull.

    The reference is the midpoint between the inner tables of the rows within 5 mm of
    the point (the head of this scan is turned, so one column per slice would not do).
    """
    k = nearest_slice(volume, np.asarray(point))
    r, c = slice_pixel(volume, k, np.asarray(point))
    half = int(round(5.0 / volume.pixel_spacing_mm[0]))
    rows = np.arange(int(round(float(r))) - half, int(round(float(r))) + half + 1)
    middle = float(np.nanmean(_skull_middle_columns(anatomy, k, rows)))
    return float((c - middle) * volume.pixel_spacing_mm[1] * np.sign(volume.row_direction[0]))


def _distance_to_long_axis_mm(volume, anatomy, k, rows, cols) -> np.ndarray:
    """In-plane distance (mm) of pixels from the head's long axis through slice k's centre.

    The axis is the principal in-plane direction of the intracranial space of the
    large slices together (single slices near the vertex are too round for one).
    """
    row_mm, col_mm = volume.pixel_spacing_mm
    area = anatomy.intracranial.sum(axis=(1, 2))
    _k, r_all, c_all = np.nonzero(anatomy.intracranial[area >= 0.5 * area.max()])
    y, x = (r_all - r_all.mean()) * row_mm, (c_all - c_all.mean()) * col_mm
    _values, vectors = np.linalg.eigh(np.cov(np.stack([y, x])))
    axis = vectors[:, -1]
    r, c = np.nonzero(anatomy.intracranial[k])
    dy, dx = (rows - r.mean()) * row_mm, (cols - c.mean()) * col_mm
    return np.abs(dy * axis[1] - dx * axis[0])


def _skull_middle_columns(anatomy, k, rows) -> np.ndarray:
    """Column midway between the inner tables of each row of slice k (NaN outside the head)."""
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        cols = np.flatnonzero(anatomy.intracranial[k, int(row)])
        if cols.size:
            out[i] = 0.5 * (cols[0] + cols[-1])
    return out


def test_default_path_is_byte_identical_to_the_code_before_mimics(head, anatomy):
    plain = make_case(head, anatomy, seed=3)
    assert sha256(plain.volume.hu) == SEED_3_HU_SHA256
    assert sha256(plain.labels) == SEED_3_LABELS_SHA256
    assert plain.mimics == ()
    explicit = make_case(head, anatomy, seed=3, mimics=0.0, scanner=False)
    assert sha256(explicit.volume.hu) == SEED_3_HU_SHA256
    # A positive case (epidural + intraparenchymal) is untouched too.
    positive = make_case(head, anatomy, seed=8)
    assert sha256(positive.volume.hu) == SEED_8_HU_SHA256
    assert sha256(positive.labels) == SEED_8_LABELS_SHA256


def test_mimic_cases_are_reproducible_and_seeds_differ(half, half_anatomy):
    a = make_case(half, half_anatomy, seed=5, mimics=True, scanner=True)
    b = make_case(half, half_anatomy, seed=5, mimics=True, scanner=True)
    c = make_case(half, half_anatomy, seed=6, mimics=True, scanner=True)
    assert np.array_equal(a.volume.hu, b.volume.hu)
    assert a.mimics == b.mimics and len(a.mimics) >= 1
    assert not np.array_equal(a.volume.hu, c.volume.hu)
    assert a.mimics != c.mimics
    hu = half.hu.astype(np.float32, copy=True)
    first = mimics.insert_mimics(
        hu, half, half_anatomy, ["pineal", "dense falx"], np.random.default_rng(1)
    )
    again = half.hu.astype(np.float32, copy=True)
    second = mimics.insert_mimics(
        again, half, half_anatomy, ["pineal", "dense falx"], np.random.default_rng(1)
    )
    assert first == second and np.array_equal(hu, again)


def test_mimics_never_change_labels_or_lesions(half, half_anatomy):
    for seed, subtypes in ((5, (EPIDURAL,)), (7, (INTRAVENTRICULAR, SUBARACHNOID)), (9, ())):
        plain = make_case(half, half_anatomy, seed=seed, subtypes=subtypes)
        mimicked = make_case(
            half, half_anatomy, seed=seed, subtypes=subtypes, mimics=True, scanner=True
        )
        assert mimicked.mimics, seed
        assert np.array_equal(plain.labels, mimicked.labels), seed
        assert plain.lesions == mimicked.lesions, seed
        assert not np.array_equal(plain.volume.hu, mimicked.volume.hu), seed
    # The probability picks cases; those it picks get the same mimics as with True.
    picked = [
        s
        for s in range(20)
        if make_case(half, half_anatomy, seed=s, subtypes=(), deform=False, mimics=0.5).mimics
    ]
    assert 3 <= len(picked) <= 17
    s = picked[0]
    assert (
        make_case(half, half_anatomy, seed=s, subtypes=(), deform=False, mimics=0.5).mimics
        == make_case(half, half_anatomy, seed=s, subtypes=(), deform=False, mimics=True).mimics
    )
    with pytest.raises(ValueError, match="probability"):
        make_case(half, half_anatomy, seed=0, mimics=1.5)


def test_a_pineal_calcification_is_on_the_midline_behind_the_ventricles(head, anatomy):
    centre_v = _ventricle_centre_mm(head, anatomy)
    posterior = np.array([0.0, 1.0, 0.0])  # patient +Y
    for seed in range(4):
        hu, (spec,) = _insert(head, anatomy, ["pineal"], seed)
        assert spec.kind == mimics.CALCIFICATION and spec.site == "pineal"
        assert abs(_lateral_mm(head, anatomy, spec.centre_mm)) <= 5.0
        assert float((np.asarray(spec.centre_mm) - centre_v) @ posterior) > 0.0
        delta = hu - head.hu
        changed = delta > 1.0
        assert float(hu[changed].max()) > 100.0
        assert spec.peak_hu > 100.0
        # Partial volume: the edge of the calcification reads like blood (50-100 HU).
        edge = changed & (hu >= 50.0) & (hu <= 100.0) & (delta > 15.0)
        assert np.count_nonzero(edge) >= 3
        # A small object: a few mm, a slice or two.
        assert len(spec.slices) <= 3
        assert head.mask_volume_ml(delta > 30.0) < 0.6


def test_choroid_calcifications_are_bilateral_in_the_atria(head, anatomy):
    hu, specs = _insert(head, anatomy, ["choroid plexus"], 2)
    assert [s.site for s in specs] == ["choroid plexus left", "choroid plexus right"]
    left, right = (_lateral_mm(head, anatomy, s.centre_mm) for s in specs)
    assert left > 8.0 and right < -8.0
    for spec in specs:
        k = nearest_slice(head, np.asarray(spec.centre_mm))
        r, c = slice_pixel(head, k, np.asarray(spec.centre_mm))
        distance = ndimage.distance_transform_edt(
            ~anatomy.ventricles[k], sampling=head.pixel_spacing_mm
        )
        assert distance[int(round(float(r))), int(round(float(c)))] <= 4.0
        assert spec.peak_hu > 80.0


def test_the_dense_falx_is_a_thin_band_on_the_midline(head, anatomy):
    row_mm, col_mm = head.pixel_spacing_mm
    for seed in (0, 1):
        hu, (spec,) = _insert(head, anatomy, ["dense falx"], seed)
        assert (spec.kind, spec.site) == (mimics.DENSE_DURA, "falx")
        assert 45.0 <= spec.peak_hu <= 130.0
        delta = hu - head.hu
        on_falx = []
        for k in spec.slices:
            half_max = delta[k] >= 0.5 * float(delta[k].max())
            if not half_max.any():
                continue
            # Thin: at most 3 mm across (+ one pixel of sampling) by the distance transform.
            thickness = 2.0 * float(
                ndimage.distance_transform_edt(half_max, sampling=head.pixel_spacing_mm).max()
            )
            assert thickness <= 3.0 + 2.0 * col_mm, (seed, k, thickness)
            # On the midline: near the long axis of the head (turned about 9 degrees in this
            # scan; the falx itself runs a few mm off the skull's axis of symmetry) ...
            rows, cols = np.nonzero(half_max)
            assert np.all(_distance_to_long_axis_mm(head, anatomy, k, rows, cols) <= 8.0), (seed, k)
            # ... and on the scan's own falx, a thin ridge denser than the brain 3 mm aside.
            smooth = cv2.GaussianBlur(head.hu[k].astype(np.float32), (0, 0), 1.0 / col_mm)
            aside = int(round(3.0 / col_mm))
            beside = 0.5 * (smooth[rows, cols - aside].mean() + smooth[rows, cols + aside].mean())
            on_falx.append(float(smooth[rows, cols].mean()) >= beside + 2.0)
            # A long band, not a dot.
            assert np.ptp(rows) * row_mm >= 15.0
        assert np.mean(on_falx) >= 0.5, (seed, on_falx)


def test_the_dense_tentorium_lies_around_the_posterior_fossa(head, anatomy):
    hu, (spec,) = _insert(head, anatomy, ["dense tentorium"], 3)
    delta = hu - head.hu
    assert float(delta.max()) <= 100.0 and float(delta.min()) >= 0.0
    centre_v = _ventricle_centre_mm(head, anatomy)
    k, r, c = np.nonzero(delta > 5.0)
    points = np.array(
        [
            head.patient_coordinates(int(kk))[rr, cc]
            for kk, rr, cc in zip(k[::20], r[::20], c[::20], strict=True)
        ]
    )
    # Behind the ventricles' centre and (mostly) below it: the tentorium, not the vertex.
    assert np.median(points[:, 1] - centre_v[1]) > 5.0
    assert np.median(points[:, 2] - centre_v[2]) < 0.0
    # Both leaves: changed voxels on both sides of the midline.
    lateral = [(cc - anatomy.midline_column[kk]) for kk, cc in zip(k, c, strict=True)]
    assert min(lateral) < -20 and max(lateral) > 20


def test_a_tentorial_subdural_lies_on_one_leaf_of_the_tentorium(head, anatomy, monkeypatch):
    monkeypatch.setattr(lesions, "SUBDURAL_FALX_PROBABILITY", 0.0)
    monkeypatch.setattr(lesions, "SUBDURAL_TENTORIUM_PROBABILITY", 1.0)
    _, fraction, spec = insert_lesion(
        head, anatomy, SUBDURAL, np.random.default_rng(2), volume_ml=6.0
    )
    assert spec.inserted_volume_ml == pytest.approx(6.0, rel=0.08)
    label = fraction >= 0.5
    k, r, c = np.nonzero(label)
    side = np.sign(c - anatomy.midline_column[k])
    assert abs(float(side.mean())) >= 0.95  # unilateral
    centre_v = _ventricle_centre_mm(head, anatomy)
    assert spec.centre_mm[2] < centre_v[2] and spec.centre_mm[1] > centre_v[1]
    # Thin: at most about 6 mm thick across the sheet (in-plane distance transform,
    # which overestimates an oblique sheet).
    thickest = max(
        float(ndimage.distance_transform_edt(label[kk], sampling=head.pixel_spacing_mm).max())
        for kk in np.unique(k)
    )
    assert 2.0 * thickest <= lesions.SUBDURAL_TENTORIUM_MAX_THICKNESS_MM + 3.0


def test_every_mimic_can_be_placed_and_the_case_stays_analysable(head, anatomy):
    hu, specs = _insert(head, anatomy, list(mimics.MIMIC_WEIGHTS), 4)
    sites = {s.site.split(" left")[0].split(" right")[0] for s in specs}
    assert {
        "pineal",
        "habenula",
        "choroid plexus",
        "globus pallidus",
        "falx plaque",
        "falx",
        "tentorium",
        "skull base",
        "inner table",
        "in-plane",
    } <= sites
    assert all(s.slices for s in specs)
    # Mimic negatives must reach the model: the input checks (on the source grid) still pass.
    check_head_ct(hu, head.pixel_spacing_mm, head.voxel_volume_ml)
    with pytest.raises(ValueError, match="unknown mimic"):
        _insert(head, anatomy, ["ghost"], 0)


def test_scanner_variety_keeps_the_skull_and_records_its_changes(half, half_anatomy):
    skull = half.hu > 600.0
    kinds = set()
    for seed in range(8):
        plain = make_case(half, half_anatomy, seed=seed, subtypes=(), deform=False)
        varied = make_case(half, half_anatomy, seed=seed, subtypes=(), deform=False, scanner=True)
        kinds |= {m.kind for m in varied.mimics}
        assert np.array_equal(plain.labels, varied.labels)
        # The field of view never cuts the skull; kernels blur bone a little at most.
        assert np.mean(varied.volume.hu[skull] > 300.0) > 0.97, seed
    assert {"kernel", "noise", "field of view"} <= kinds


def test_implausible_inputs_are_refused_by_the_input_checks(head, anatomy):
    spacing, voxel_ml = head.pixel_spacing_mm, head.voxel_volume_ml
    check_head_ct(head.hu, spacing, voxel_ml)  # the real head passes
    for eight_bit in (True, False):
        windowed = mimics.clip_to_window(head.hu, 40.0, 80.0, eight_bit=eight_bit)
        assert float(windowed.min()) >= -100.0
        assert float(windowed.max()) <= (255.0 if eight_bit else 80.0)
        with pytest.raises(NotAnalysableError):
            check_head_ct(windowed, spacing, voxel_ml)
    filled = mimics.zero_fill_background(head.hu)
    assert not np.any(filled < -200.0)  # no air left
    with pytest.raises(NotAnalysableError):
        check_head_ct(filled, spacing, voxel_ml)
    for fill in (0.0, -1000.0):
        stripped = mimics.skull_strip(head.hu, anatomy.intracranial, fill_hu=fill)
        assert not np.any(stripped[~anatomy.intracranial] != fill)
        with pytest.raises(NotAnalysableError):
            check_head_ct(stripped, spacing, voxel_ml)
    with pytest.raises(ValueError):
        mimics.clip_to_window(head.hu, 40.0, 0.0)


def test_evaluation_plan_and_case_files_carry_the_mimics(tmp_path):
    plain = evaluation_plan(24, 900_000)
    with_mimics = evaluation_plan(24, 900_000, mimics=True)
    assert [p[:2] for p in with_mimics] == plain
    assert all(len(p) == 3 and p[2] is True for p in with_mimics)
    case = ModelGridCase(
        windowed=np.zeros((2, 8, 8, 3), np.uint8),
        labels=np.zeros((2, 8, 8), np.uint8),
        subtypes=(EPIDURAL,),
        volumes_ml=(3.0,),
        seed=4,
        mimics=("calcification: pineal", "kernel: sharp"),
    )
    bare = ModelGridCase(
        windowed=case.windowed, labels=case.labels, subtypes=(), volumes_ml=(), seed=5
    )
    save_cases(tmp_path / "cases.npz", [case, bare])
    loaded = load_cases(tmp_path / "cases.npz")
    assert loaded[0].mimics == case.mimics and loaded[1].mimics == ()
    assert subtype_label(EPIDURAL) == 1
