"""The shipped ``ich`` pipeline on the real scans in ../shared/data, as a radiologist judges it.

- the Philips plastic head phantom (S2010, S2020) is never positive and says why;
- the normal GE head is negative, also with a calcification drawn at the pineal
  gland and in both choroid plexus (dense foci the old model called blood);
- a copy of the GE head with air and bone zero-filled (as some exports do) is
  not analysable;
- the CQ500 head CT with hemorrhage (readers: intraparenchymal yes,
  subarachnoid yes, subdural no, epidural no) is positive with subarachnoid
  blood and without a subdural or epidural finding; the intraparenchymal blood
  the readers saw is a known miss (a strict xfail, so a model that finds it
  makes the suite fail until someone has looked at where).

CQ500 is test data only (CC BY-NC-SA, never used for training or for choosing
a threshold): it is read from ../shared/data, never copied. These tests run
the real model on the CPU, about 5-10 s per series.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from dicom_node.errors import NotAnalysableError
from dicom_node.imaging.blood_rules import BLOOD_RULES, fit_midsagittal_line
from dicom_node.imaging.head_ct import cranial_cavity
from dicom_node.pipelines.ich import IchPipeline
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def pipeline() -> IchPipeline:
    return IchPipeline()


@pytest.fixture(scope="module")
def ge_head(head_ct_dir) -> CTVolume:
    return load_ct_volume(read_datasets(sorted(head_ct_dir.glob("*.dcm"))))


def _present(result) -> dict[str, float]:
    return {f.label: f.volume_ml for f in result.findings if f.present}


def test_the_shipped_model_is_the_region_rule_release(pipeline):
    assert pipeline.package.series_rule == "region"
    assert pipeline.package.blood_rules is not None
    assert set(pipeline.package.blood_rules.enabled) == {
        "intracranial",
        "density",
        "calcification",
        "dural",
    }
    assert pipeline.package.spec.slab_thickness_mm == 5.0


def test_the_normal_ge_head_is_negative(pipeline, ge_head):
    result = pipeline.run(ge_head)
    assert _present(result) == {}
    assert result.details["series_score"] < result.details["threshold"]
    assert result.details["input_checks"]["brain_fraction"] > 0.7


@pytest.mark.parametrize("series", ["S2010", "S2020"])
def test_the_head_phantom_is_never_positive_and_says_why(pipeline, shared_data, series):
    files = sorted(
        p for p in (shared_data / "head-phantom-philips" / series).iterdir() if p.is_file()
    )
    volume = load_ct_volume(read_datasets(files))
    with pytest.raises(NotAnalysableError) as err:
        pipeline.run(volume)
    assert err.value.gate == "brain_content"
    assert "phantom" in err.value.reason
    assert "parenchyma" in err.value.reason


def test_a_zero_filled_copy_of_the_ge_head_is_not_analysable(pipeline, ge_head):
    hu = ge_head.hu.copy()
    hu[(hu < -200) | (hu > 300)] = 0.0  # air and bone written as 0 HU
    with pytest.raises(NotAnalysableError) as err:
        pipeline.run(dataclasses.replace(ge_head, hu=hu))
    assert err.value.gate in ("hu_scale", "background", "skull")


def _draw_focus(
    hu: np.ndarray, k: int, r: float, c: float, spacing, radius_mm: float, peak_hu: float
) -> np.ndarray:
    """Blend a round calcified focus into slice ``k``; return its (rows, cols) footprint."""
    rr, cc = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    distance_mm = np.hypot((rr - r) * spacing[0], (cc - c) * spacing[1])
    focus = ndimage.gaussian_filter(np.clip(radius_mm - distance_mm, 0, 1), 1.5)
    hu[k] = hu[k] * (1 - focus) + peak_hu * focus
    return distance_mm < radius_mm + 6.0


def test_inserted_pineal_and_choroid_calcifications_are_not_called_blood(pipeline, ge_head):
    hu = ge_head.hu.copy()
    spacing = ge_head.pixel_spacing_mm
    cavity = cranial_cavity(hu, spacing)
    line = fit_midsagittal_line(cavity.cavity, spacing)
    near = np.zeros(ge_head.shape, dtype=bool)
    for k in (15, 16):
        rows = np.flatnonzero(cavity.cavity[k].any(axis=1))
        r = rows.min() + 0.62 * (rows.max() - rows.min())
        c = line.slope * r + line.intercept
        near[k] |= _draw_focus(hu, k, r, c, spacing, 3.0, 260.0)  # pineal gland
        for side in (-1, 1):  # choroid plexus of the lateral ventricles' trigones
            near[k] |= _draw_focus(
                hu, k, r - 6.0 / spacing[0], c + side * 26.0 / spacing[1], spacing, 2.5, 200.0
            )
    result = pipeline.run(dataclasses.replace(ge_head, hu=hu))
    assert _present(result) == {}, result.details["regions"][:3]
    found = result.details["blood_rules"]["calcifications"]
    assert any(entry["site"] == "pineal gland" for entry in found), found


@pytest.fixture(scope="module")
def cq500_result(pipeline, shared_data):
    files = sorted((shared_data / "head-ct-cq500-ich").glob("*.dcm"))
    return pipeline.run(load_ct_volume(read_datasets(files)))


def test_cq500_is_positive_with_subarachnoid_blood(cq500_result):
    present = _present(cq500_result)
    assert "subarachnoid hemorrhage" in present, cq500_result.details["subtypes"]
    assert cq500_result.details["series_score"] >= cq500_result.details["threshold"]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known miss of 1.1.0 and 1.2.0: all three readers saw intraparenchymal blood, the model "
        "reports none. 1.0.1 with the same rules reported 8.1 mL, but its mask lay on the "
        "tentorium, "
        "straight sinus and posterior falx (docs/ich-model.md). If this passes, look at where "
        "the mask lies before removing the mark."
    ),
)
def test_cq500_intraparenchymal_blood_is_found(cq500_result):
    assert "intraparenchymal hemorrhage" in _present(cq500_result), cq500_result.details["regions"]


def test_cq500_has_no_subdural_or_epidural_finding(cq500_result):
    present = _present(cq500_result)
    assert "subdural hemorrhage" not in present, present
    assert "epidural hemorrhage" not in present, present


def test_cq500_is_read_on_slabs_and_its_masks_cover_the_source_frames(cq500_result):
    slabs = cq500_result.details["slabs"]
    assert slabs["source_slices"] == 238
    assert slabs["model_slices"] < 60  # 0.625 mm slices averaged into ~5 mm slabs
    for finding in cq500_result.findings:
        assert finding.mask.shape == (238, 512, 512)
    marked = np.flatnonzero(
        np.any([f.mask.any(axis=(1, 2)) for f in cq500_result.findings], axis=0)
    )
    # A slab's mask lands on every source frame of it, so blood spans several frames.
    assert marked.size >= 8


def test_the_rule_ablation_on_real_series_reports_each_rule(shared_data, head_ct_dir):
    from dicom_node.pipelines.ich import IchModelPackage, default_model_dir
    from dicom_node.training.ablation_ich import evaluate_rules_on_series, real_series_table

    phantom = shared_data / "head-phantom-philips" / "S2020"
    result = evaluate_rules_on_series(default_model_dir(), [head_ct_dir, phantom])
    ge = result[f"{head_ct_dir.parent.name}/{head_ct_dir.name}"]
    enabled = IchModelPackage.load(default_model_dir()).blood_rules.enabled
    every = [] if set(enabled) == set(BLOOD_RULES) else ["every rule"]
    assert list(ge) == ["none", *BLOOD_RULES, "all", *every]
    assert all(row["findings"] == {} for row in ge.values())
    assert set(ge["all"]["removed_ml"]) == set(enabled)  # "all": the package's rules
    assert result["head-phantom-philips/S2020"]["not_analysable"].startswith("brain_content:")
    table = real_series_table(result)
    assert "not analysable: brain_content" in table and "| all |" in table
