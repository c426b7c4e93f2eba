"""Input plausibility, blood plausibility rules, slabs and the operating point, without the model.

Every check is run on the real GE head CT and on copies of it broken in the way
real exports break (zero-filled air, 8-bit windowing, skull stripping, contrast),
so each test fails if its check stops catching that input.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from dicom_node.errors import NotAnalysableError
from dicom_node.imaging.blood_rules import (
    BloodRuleSettings,
    apply_blood_rules,
    calcification_site,
    fit_midsagittal_line,
)
from dicom_node.imaging.head_ct import check_head_ct, cranial_cavity
from dicom_node.imaging.ich_input import slab_grid
from dicom_node.series.volume import load_ct_volume, read_datasets
from dicom_node.training.ablation_ich import operating_point


@pytest.fixture(scope="module")
def head(head_ct_dir):
    return load_ct_volume(read_datasets(sorted(head_ct_dir.glob("*.dcm"))))


def _check(volume, **kwargs):
    return check_head_ct(volume.hu, volume.pixel_spacing_mm, volume.voxel_volume_ml, **kwargs)


def test_the_real_head_passes_every_input_check(head):
    measures = _check(head)
    assert measures.figures["brain_fraction"] > 0.7
    assert measures.figures["cavity_ml"] > 1000
    assert measures.figures["enhanced_ml"] < 0.5


def test_zero_filled_air_is_not_analysable(head):
    hu = head.hu.copy()
    hu[hu < -200] = 0.0
    with pytest.raises(NotAnalysableError) as err:
        _check(dataclasses.replace(head, hu=hu))
    assert err.value.gate in ("hu_scale", "background")
    assert "air" in err.value.reason


def test_an_8_bit_windowed_export_is_not_analysable(head):
    windowed = np.clip((head.hu - 0.0) / 80.0 * 255.0, 0, 255).round()
    with pytest.raises(NotAnalysableError) as err:
        _check(dataclasses.replace(head, hu=windowed.astype(np.float32)))
    assert err.value.gate == "hu_scale"
    assert "Hounsfield" in err.value.reason


def test_a_skull_stripped_export_is_not_analysable(head):
    cavity = cranial_cavity(head.hu, head.pixel_spacing_mm).cavity
    stripped = np.where(ndimage.binary_erosion(cavity, iterations=2), head.hu, 0.0)
    with pytest.raises(NotAnalysableError) as err:
        _check(dataclasses.replace(head, hu=stripped.astype(np.float32)))
    assert err.value.gate in ("hu_scale", "background", "skull")


def test_the_philips_head_phantom_is_not_a_human_head(shared_data):
    folder = shared_data / "head-phantom-philips" / "S2010"
    phantom = load_ct_volume(read_datasets(sorted(p for p in folder.iterdir() if p.is_file())))
    with pytest.raises(NotAnalysableError) as err:
        _check(phantom)
    assert err.value.gate == "brain_content"
    assert "phantom" in err.value.reason


def test_a_named_contrast_agent_or_enhanced_vessels_are_refused(head):
    with pytest.raises(NotAnalysableError) as err:
        _check(head, contrast_bolus_agent="Iohexol 350")
    assert err.value.gate == "contrast" and "Iohexol" in err.value.reason
    # Enhanced arteries: tubes of 300 HU, 3 mm wide, deep in the brain (about 4 mL).
    hu = head.hu.copy()
    cavity = cranial_cavity(hu, head.pixel_spacing_mm)
    deep = cavity.depth_mm > 20
    rows, cols = np.nonzero(deep[14])
    r0, c0 = int(rows.mean()), int(cols.mean())
    for k in range(10, 20):
        for dr in range(-60, 60, 20):
            hu[k, r0 + dr - 3 : r0 + dr + 3, c0 - 60 : c0 + 60] = 300.0
    with pytest.raises(NotAnalysableError) as err:
        _check(dataclasses.replace(head, hu=hu))
    assert err.value.gate == "contrast"


def _blank_rules(head, blood, hu=None, enabled=("intracranial",)):
    hu = head.hu if hu is None else hu
    cavity = cranial_cavity(hu, head.pixel_spacing_mm)
    return apply_blood_rules(
        blood,
        hu,
        slab_of_slice=np.arange(head.shape[0]),
        cavity=cavity,
        pixel_spacing_mm=head.pixel_spacing_mm,
        voxel_volume_ml=head.voxel_volume_ml,
        settings=BloodRuleSettings(enabled=enabled),
    )


def test_the_intracranial_rule_removes_scalp_and_keeps_the_cavity(head):
    cavity = cranial_cavity(head.hu, head.pixel_spacing_mm).cavity
    scalp = (head.hu > 0) & (head.hu < 80) & ~ndimage.binary_dilation(cavity, iterations=8)
    blood = scalp | (cavity & (head.hu > 30) & (head.hu < 40))
    kept, report = _blank_rules(head, blood)
    assert not (kept & scalp).any()
    assert (kept & cavity).sum() == (blood & cavity).sum()
    assert report.removed_ml["intracranial"] > 1.0


def test_the_density_rule_keeps_blood_and_drops_bone_and_brain(head):
    hu = head.hu.copy()
    cavity = cranial_cavity(hu, head.pixel_spacing_mm).cavity
    k = 16
    rows, cols = np.nonzero(cavity[k])
    r, c = int(rows.mean()), int(cols.mean())
    hu[k, r - 10 : r + 10, c - 30 : c - 10] = 70.0  # acute blood
    hu[k, r - 10 : r + 10, c + 10 : c + 30] = 300.0  # calcification
    blood = np.zeros(head.shape, dtype=bool)
    blood[k, r - 8 : r + 8, c - 28 : c - 12] = True
    blood[k, r - 8 : r + 8, c + 12 : c + 28] = True
    kept, _ = _blank_rules(head, blood, hu, ("density",))
    assert kept[k, r - 8 : r + 8, c - 28 : c - 12].all()
    assert not kept[k, r - 8 : r + 8, c + 12 : c + 28].any()


def test_a_pineal_calcification_is_recognised_and_its_halo_is_not_blood(head):
    hu = head.hu.copy()
    cavity = cranial_cavity(hu, head.pixel_spacing_mm)
    line = fit_midsagittal_line(cavity.cavity, head.pixel_spacing_mm)
    k = 16
    rows = np.flatnonzero(cavity.cavity[k].any(axis=1))
    r = int(rows.min() + 0.62 * (rows.max() - rows.min()))
    c = int(round(line.slope * r + line.intercept))
    rr, cc = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    distance_mm = np.hypot((rr - r) * head.pixel_spacing_mm[0], (cc - c) * head.pixel_spacing_mm[1])
    focus = ndimage.gaussian_filter(np.clip(3.0 - distance_mm, 0, 1), 1.5)
    hu[k] = hu[k] * (1 - focus) + 250.0 * focus
    # The model's typical false alarm: the focus and its 60-90 HU rim called blood.
    blood = np.zeros(head.shape, dtype=bool)
    blood[k] = distance_mm < 4.5
    kept, report = _blank_rules(head, blood, hu, ("calcification",))
    assert not kept.any()
    sites = [c.site for c in report.calcifications if c.slice_index == k]
    assert "pineal gland" in sites
    # The same blood far from any focus is kept.
    far = np.zeros(head.shape, dtype=bool)
    far[k] = np.hypot((rr - r + 60) * 0.49, (cc - c - 60) * 0.49) < 4.5
    kept, _ = _blank_rules(head, far, hu, ("calcification",))
    assert kept.sum() == far.sum()


def test_calcification_sites_follow_their_anatomy():
    assert calcification_site(0.5, False, 60.0, False, 300.0) == "pineal gland"
    assert calcification_site(1.0, False, 60.0, True, 300.0) == "falx"
    assert calcification_site(24.0, True, 50.0, False, 200.0) == "choroid plexus"
    assert calcification_site(18.0, False, 50.0, False, 150.0) == "basal ganglia"
    assert calcification_site(0.0, False, 60.0, False, 1400.0) == "skull base"
    assert calcification_site(40.0, False, 10.0, False, 300.0) == "skull base"


def test_the_dural_rule_drops_a_thin_falx_and_keeps_a_parafalcine_collection(head):
    cavity = cranial_cavity(head.hu, head.pixel_spacing_mm)
    line = fit_midsagittal_line(cavity.cavity, head.pixel_spacing_mm)
    rr, cc = np.mgrid[0 : head.shape[1], 0 : head.shape[2]]
    offset = line.distance_mm(rr, cc)
    k = 20
    inside = cavity.cavity[k]
    rows = np.flatnonzero(inside.any(axis=1))
    top = rr < rows.min() + 0.4 * (rows.max() - rows.min())
    falx = np.zeros(head.shape, dtype=bool)
    falx[k] = inside & top & (np.abs(offset) < 0.75)  # 1.5 mm line
    collection = np.zeros(head.shape, dtype=bool)
    collection[k] = inside & top & (offset > 0) & (offset < 8.0)  # 8 mm thick
    kept, _ = _blank_rules(head, falx, enabled=("dural",))
    assert kept.sum() < 0.1 * falx.sum()
    kept, _ = _blank_rules(head, collection, enabled=("dural",))
    assert kept.sum() > 0.8 * collection.sum()


def test_thin_series_are_read_on_5_mm_slabs_and_thick_ones_slice_by_slice():
    hu = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((40, 4, 4), np.float32)
    thin = slab_grid(hu, np.arange(40) * 0.625, 5.0)
    assert thin.slabs == 5 and not thin.is_identity
    assert np.array_equal(np.bincount(thin.slab_of_slice), [8] * 5)
    assert thin.hu[0, 0, 0] == pytest.approx(np.mean(np.arange(8)))
    thick = slab_grid(hu[:10], np.arange(10) * 5.0, 5.0)
    assert thick.is_identity and thick.hu is hu[:10].base or thick.slabs == 10
    # A short last run joins its neighbour rather than forming a thin slab.
    odd = slab_grid(hu[:19], np.arange(19) * 0.625, 5.0)
    assert np.bincount(odd.slab_of_slice).tolist() == [8, 11]


def test_the_operating_point_reaches_the_target_specificity():
    scores = [0.1, 0.2, 0.3, 0.95, 0.6, 0.7, 0.8, 0.9, 0.5, 0.4]
    truth = [False, False, False, False, True, True, True, True, True, False]
    point = operating_point(scores, truth, min_specificity=0.8)
    assert point["specificity"] >= 0.8
    assert point["sensitivity"] == 1.0
    strict = operating_point(scores, truth, min_specificity=1.0)
    assert strict["specificity"] == 1.0 and strict["threshold"] > 0.9


def test_the_operating_point_keeps_the_sensitivity_floor_when_the_target_is_out_of_reach():
    # One negative scores above most positives: 1.0 specificity would miss 4 of 5 bleeds.
    scores = [0.1, 0.2, 0.3, 0.92, 0.6, 0.7, 0.8, 0.9, 0.95, 0.4]
    truth = [False, False, False, False, True, True, True, True, True, False]
    strict = operating_point(scores, truth, min_specificity=1.0)
    assert strict["sensitivity"] == 0.2 and strict["rule"] == "specificity"
    floor = operating_point(scores, truth, min_specificity=1.0, min_sensitivity=0.8)
    assert floor["rule"] == "sensitivity floor" and floor["target_met"] is False
    assert floor["sensitivity"] == 0.8 and floor["specificity"] == 0.8
    assert 0.6 < floor["threshold"] <= 0.7


def _tentorium_arms(head, hu, k, both: bool):
    """A V of 4 mm dense bands meeting on the midline behind the brainstem, as a dense
    tentorium reads on an axial slice; ``both=False`` draws only the right arm."""
    import cv2

    cavity = cranial_cavity(head.hu, head.pixel_spacing_mm)
    line = fit_midsagittal_line(cavity.cavity, head.pixel_spacing_mm)
    rows = np.flatnonzero(cavity.cavity[k].any(axis=1))
    apex_r = int(rows.min() + 0.82 * (rows.max() - rows.min()))
    apex_c = int(round(line.slope * apex_r + line.intercept))
    width_px = max(1, int(round(4.0 / head.pixel_spacing_mm[1])))
    arm_r, arm_c = int(55 / head.pixel_spacing_mm[0]), int(30 / head.pixel_spacing_mm[1])
    bands = np.zeros(head.shape[1:], np.uint8)
    right = np.zeros(head.shape[1:], np.uint8)
    cv2.line(right, (apex_c, apex_r), (apex_c - arm_c, apex_r - arm_r), 1, width_px)
    bands |= right
    if both:
        cv2.line(bands, (apex_c, apex_r), (apex_c + arm_c, apex_r - arm_r), 1, width_px)
    hu = hu.copy()
    hu[k][bands > 0] = 75.0
    blood = np.zeros(head.shape, dtype=bool)
    blood[k] = (right > 0) & cavity.cavity[k]  # the model fires on one arm
    return hu, blood


def test_the_dural_band_rule_drops_a_symmetric_tentorium_and_keeps_a_one_sided_band(head):
    """A dense tentorium is bilateral: blood called on one arm of a symmetric V is dura.
    The same band on one side only is what a tentorial subdural looks like: kept."""
    k = 12
    hu, blood = _tentorium_arms(head, head.hu, k, both=True)
    kept, report = _blank_rules(head, blood, hu, ("dural_band",))
    assert kept.sum() < 0.2 * blood.sum(), (kept.sum(), blood.sum())
    assert report.removed_ml["dural_band"] > 0.05
    hu, blood = _tentorium_arms(head, head.hu, k, both=False)
    kept, _ = _blank_rules(head, blood, hu, ("dural_band",))
    assert kept.sum() > 0.8 * blood.sum(), (kept.sum(), blood.sum())


def test_the_ablation_judges_the_package_rules_as_all_and_every_rule_apart():
    from dicom_node.imaging.blood_rules import BLOOD_RULES, BloodRuleSettings
    from dicom_node.training.ablation_ich import rule_sets

    package = BloodRuleSettings(enabled=("intracranial", "density", "calcification", "dural"))
    sets = rule_sets(package)
    assert sets["all"].enabled == package.enabled  # what the node runs
    assert set(sets["every rule"].enabled) == set(BLOOD_RULES)
    assert sets["none"].enabled == ()
    assert all(sets[rule].enabled == (rule,) for rule in BLOOD_RULES)
    assert "every rule" not in rule_sets(BloodRuleSettings())  # the defaults enable all
