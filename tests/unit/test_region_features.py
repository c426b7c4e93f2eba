"""Region figures of candidate blood and the region classifier (false-positive reduction)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dicom_node.errors import ModelPackageError
from dicom_node.imaging.blood_rules import MidsagittalLine
from dicom_node.imaging.region_features import (
    CLIP_Z,
    LOG_FEATURES,
    REGION_FEATURES,
    RegionClassifier,
    fit_region_classifier,
    region_features,
)

SPACING = (0.5, 0.5)


def _figures(hu: np.ndarray, blood: np.ndarray, subtype: int = 4):
    regions, count = ndimage.label(blood)
    n = count + 1
    kk, rr, cc = np.nonzero(blood)
    probability = np.full(kk.size, 0.9)
    depth = np.full(hu.shape, 30.0, dtype=np.float32)
    midline = MidsagittalLine(slope=0.0, intercept=100.0, pixel_spacing_mm=SPACING)
    region_ml = np.bincount(regions[blood], minlength=n) * 0.5 * 0.5 * 5.0 / 1000.0
    return region_features(
        hu,
        blood,
        regions,
        count,
        probability,
        np.full(n, subtype),
        extent_mm=np.full(n, 5.0),
        region_ml=region_ml,
        depth_mm=depth,
        midline=midline,
        pixel_spacing_mm=SPACING,
    )


def column(name: str) -> int:
    return REGION_FEATURES.index(name)


def test_a_one_sided_hematoma_and_a_symmetric_dense_band_differ_in_their_mirror_image():
    hu = np.full((1, 200, 200), 35.0, dtype=np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    hematoma = (yy - 100) ** 2 + (xx - 60) ** 2 <= 10**2  # radius 5 mm, left of column 100
    hu[0][hematoma] = 70.0
    blood = hematoma[None].copy()
    one_sided = _figures(hu, blood)[1]
    # The same blob with its mirror image about column 100 just as dense (a dense dural pair).
    hu[0][(yy - 100) ** 2 + (xx - 140) ** 2 <= 10**2] = 70.0
    symmetric = _figures(hu, blood)[1]
    assert one_sided[column("mirror_over_brain_hu")] == pytest.approx(0.0, abs=1.0)
    assert symmetric[column("mirror_over_brain_hu")] == pytest.approx(35.0, abs=1.0)
    assert one_sided[column("midline_mm")] == pytest.approx(20.0, abs=0.5)
    assert one_sided[column("mean_hu")] == pytest.approx(70.0, abs=3.0)
    # A disk of radius 10 px is about 10 mm thick at 0.5 mm pixels.
    assert one_sided[column("thickness_mm")] == pytest.approx(10.0, abs=1.0)
    assert one_sided[column("intraparenchymal")] == 1.0 and one_sided[column("subdural")] == 0


def test_a_thin_band_is_elongated_and_a_disk_is_not():
    hu = np.full((1, 200, 200), 35.0, dtype=np.float32)
    band = np.zeros((1, 200, 200), dtype=bool)
    band[0, 60:64, 20:90] = True  # 2 mm x 35 mm
    disk = np.zeros_like(band)
    yy, xx = np.mgrid[0:200, 0:200]
    disk[0] = (yy - 150) ** 2 + (xx - 150) ** 2 <= 12**2
    hu[band | disk] = 70.0
    figures = _figures(hu, band | disk)
    regions, _ = ndimage.label(band | disk)
    band_row, disk_row = figures[regions[0, 61, 50]], figures[regions[0, 150, 150]]
    assert band_row[column("elongation")] > 5 * disk_row[column("elongation")]
    assert band_row[column("thickness_mm")] < 3.0


def test_the_classifier_is_fitted_read_back_and_rejects_a_malformed_entry():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(REGION_FEATURES)))
    y = x[:, 1] - x[:, 10] + 0.3 * rng.normal(size=400) > 0
    fitted = fit_region_classifier(x, y, l2=1.0, fitted_on="test")
    p = fitted.probability(x)
    assert p.shape == (400,) and ((p > 0.5) == y).mean() > 0.9
    assert fitted.coefficients[1] > 0 > fitted.coefficients[10]
    again = RegionClassifier.from_manifest(fitted.to_manifest())
    np.testing.assert_allclose(again.probability(x), p, atol=1e-4)
    assert RegionClassifier.from_manifest(None) is None
    bad = {**fitted.to_manifest(), "features": ["no_such_figure", *fitted.features[1:]]}
    with pytest.raises(ModelPackageError, match="unknown features"):
        RegionClassifier.from_manifest(bad)
    with pytest.raises(ModelPackageError, match="malformed"):
        RegionClassifier.from_manifest({"features": list(fitted.features)})
    with pytest.raises(ValueError, match="one class"):
        fit_region_classifier(x, np.ones(400, dtype=bool))


def test_log_figures_and_the_clip_keep_one_out_of_range_figure_from_deciding_a_region():
    # Held-out failure of the first 1.2.0 fit: an 18 mL subdural (elongation 7, 630 mm2
    # per slice, far above the regions it was fitted on) scored 0.07 because its linear
    # terms ran unbounded. With ln(1 + x) and the +-3 clip the same shift is bounded.
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(500, len(REGION_FEATURES))))
    elongation = REGION_FEATURES.index("elongation")
    y = x[:, 1] - 0.5 * x[:, elongation] + 0.2 * rng.normal(size=500) > 0.3
    raw = fit_region_classifier(x, y, l2=1.0)
    bounded = fit_region_classifier(x, y, l2=1.0, log_features=LOG_FEATURES, clip_z=CLIP_Z)
    assert bounded.log_features == tuple(f for f in REGION_FEATURES if f in LOG_FEATURES)
    far = x[y][:20].copy()
    far[:, elongation] = 60.0  # some 40 standard deviations out

    def logit_shift(classifier):
        p0, p1 = classifier.probability(x[y][:20]), classifier.probability(far)
        return np.abs(np.log(p0 / (1 - p0)) - np.log(p1 / (1 - p1))).max()

    coefficient = abs(bounded.coefficients[bounded.features.index("elongation")])
    assert 0 < logit_shift(bounded) <= 2 * CLIP_Z * coefficient + 1e-6
    assert logit_shift(raw) > 5 * logit_shift(bounded)
    again = RegionClassifier.from_manifest(bounded.to_manifest())
    assert again.clip_z == CLIP_Z and again.log_features == bounded.log_features
    np.testing.assert_allclose(again.probability(far), bounded.probability(far), atol=1e-4)


def test_train_ich_regions_packages_the_classifier_with_a_validation_threshold(tmp_path):
    # Regions cached as the command writes them (measuring real cases takes minutes).
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from dicom_node.cli import app
    from dicom_node.pipelines.ich import IchModelPackage, default_model_dir

    rng = np.random.default_rng(1)

    def regions(cases: int, seed: int) -> dict:
        case = rng.integers(0, cases, size=300)
        positive = np.arange(cases) % 4 != 0
        blood = positive[case] & (rng.random(300) < 0.6)
        x = rng.normal(size=(300, len(REGION_FEATURES)))
        x[:, 1] += 2.0 * blood
        return {
            "features": x,
            "overlap": blood.astype(float),
            "case": case,
            "case_positive": positive,
            "seeds": np.array([seed, seed + cases - 1]),
        }

    work = tmp_path / "work"
    work.mkdir()
    np.savez(work / "train-100000-40.npz", **regions(40, 100000))
    np.savez(work / "validation-200000-20.npz", **regions(20, 200000))
    source = default_model_dir()
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "ich-regions",
            "--from",
            str(source),
            "--version",
            "9.9.9",
            "--out",
            str(out),
            "--work-dir",
            str(work),
            "--cases",
            "40",
            "--validation-cases",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    package = IchModelPackage.load(Path(out))
    assert package.region_classifier is not None
    assert package.region_classifier.coefficients[1] > 0  # mean_probability carried the label
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection"]["validation"]["seeds"] == [200000, 200019]
    assert 0.0 < manifest["detection"]["any_ich_threshold"] < 1.0
    assert (out / "MODEL_CARD.md").is_file()
