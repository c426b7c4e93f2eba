"""Per-region figures of candidate blood, and the region classifier that reads them.

After the network and the blood plausibility rules
(:mod:`dicom_node.imaging.blood_rules`), the candidate blood is split into
6-connected 3-D regions. Each region is described by a few figures a
radiologist would look at too: its size and extent, how sure the network is,
its density and texture in HU, how deep it lies inside the skull, how far from
the midline, how thick it is in plane, and whether its mirror image across the
mid-sagittal line is just as dense (a dense falx or tentorium is symmetric;
a hematoma is not). A logistic regression on these figures
(:class:`RegionClassifier`, fitted on synthetic cases with hard mimics whose
seeds are kept apart from training, validation and evaluation) gives each
region the probability that it is blood; the series decision uses it instead
of the network's probability alone. This is the false-positive reduction stage
of classic CAD systems.

References
----------
Parizel PM, et al. Intracranial hemorrhage: principles of CT and MRI
interpretation. Eur Radiol 2001;11:1770-1783 (density and site of acute blood,
physiologic calcification, dense dura). Chan HP, et al. Computer-aided
detection: false-positive reduction with feature classifiers (review), Med
Phys 2008;35:5360-5377. Hosmer DW, Lemeshow S. Applied Logistic Regression
(Newton-Raphson / IRLS fit with an L2 penalty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.errors import ModelPackageError

#: Names of the region figures, in the column order of :func:`region_features`.
REGION_FEATURES: tuple[str, ...] = (
    "log_volume_ml",  # ln(volume in mL + 0.01)
    "mean_probability",  # mean of the network's blood probability over the region
    "max_probability",
    "extent_mm",  # along the slice normal
    "slices",  # source slices the region touches
    "mean_hu",  # of the source HU (Gaussian sigma 0.5 mm)
    "std_hu",
    "dense_fraction",  # share of voxels above 75 HU
    "depth_mm",  # mean in-plane distance from the inner table
    "midline_mm",  # mean absolute distance from the mid-sagittal line
    "mirror_contrast_hu",  # mean HU of the mirror image (3 mm max filter) minus mean_hu
    "mirror_over_brain_hu",  # mirror image's HU minus the brain's median (30-45 HU pixels)
    "thickness_mm",  # in-plane: twice the largest inscribed radius
    "area_per_slice_mm2",
    "elongation",  # area_per_slice_mm2 / thickness_mm ** 2 (a band reads high)
    "epidural",
    "subdural",
    "subarachnoid",
    "intraparenchymal",
    "intraventricular",
)

#: Heavy-tailed figures that enter the classifier as ln(1 + x): a linear term in
#: raw elongation or area lets one large, band-like subdural (elongation 7,
#: 600 mm2 per slice) fall far outside the fitted range and score near 0.
LOG_FEATURES: tuple[str, ...] = (
    "extent_mm",
    "slices",
    "thickness_mm",
    "area_per_slice_mm2",
    "elongation",
)

#: Standardised figures are clipped to +-CLIP_Z before the linear model, so no
#: single figure outside the training range decides a region on its own.
CLIP_Z = 3.0


def region_features(
    hu: np.ndarray,
    blood: np.ndarray,
    regions: np.ndarray,
    count: int,
    blood_probability: np.ndarray,
    winner: np.ndarray,
    *,
    extent_mm: np.ndarray,
    region_ml: np.ndarray,
    depth_mm: np.ndarray,
    midline,
    pixel_spacing_mm: tuple[float, float],
) -> np.ndarray:
    """Measure every candidate blood region.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 (slices, rows, columns): the source HU.
    blood : numpy.ndarray
        bool (slices, rows, columns): the candidate blood after the rules.
    regions : numpy.ndarray
        int (slices, rows, columns): :func:`scipy.ndimage.label` of ``blood``
        (0 outside), regions 1..``count``.
    count : int
        Number of regions.
    blood_probability : numpy.ndarray
        float (n,): the network's blood probability of each voxel of
        ``numpy.nonzero(blood)``, in that order.
    winner : numpy.ndarray
        int (count + 1,): subtype label (1-5, :data:`ICH_SUBTYPES` order) of each region.
    extent_mm : numpy.ndarray
        float (count + 1,): extent along the slice normal (mm).
    region_ml : numpy.ndarray
        float (count + 1,): volume (mL).
    depth_mm : numpy.ndarray
        float32 (slices, rows, columns): in-plane distance from the inner table
        (the cranial cavity's ``depth_mm`` taken to the source slices).
    midline : MidsagittalLine or None
        The fitted mid-sagittal line; without it the midline and mirror
        figures are 0.
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.

    Returns
    -------
    numpy.ndarray
        float64 (count + 1, len(:data:`REGION_FEATURES`)); row 0 (background) is zero.

    References
    ----------
    See the module docstring.
    """
    from dicom_node.imaging.cavity_midline import _mirror_pixels

    n = count + 1
    out = np.zeros((n, len(REGION_FEATURES)), dtype=np.float64)
    if count == 0:
        return out
    kk, rr, cc = np.nonzero(blood)
    inside = regions[kk, rr, cc]
    voxels = np.maximum(np.bincount(inside, minlength=n).astype(np.float64), 1.0)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(inside, weights=values, minlength=n) / voxels

    row_mm, col_mm = pixel_spacing_mm
    pixel_mm = float(np.sqrt(row_mm * col_mm))
    smooth_v = np.empty(kk.size, dtype=np.float64)
    mirror_v = np.zeros(kk.size, dtype=np.float64)
    brain_v = np.zeros(kk.size, dtype=np.float64)
    thick_v = np.zeros(kk.size, dtype=np.float64)
    window = max(3, int(round(3.0 / pixel_mm)) | 1)
    for k in np.unique(kk):
        at = kk == k
        s = cv2.GaussianBlur(np.ascontiguousarray(hu[k], dtype=np.float32), (0, 0),
                             0.5 / pixel_mm)  # fmt: skip
        smooth_v[at] = s[rr[at], cc[at]]
        distance = cv2.distanceTransform(blood[k].astype(np.uint8), cv2.DIST_L2, 5)
        thick_v[at] = distance[rr[at], cc[at]]
        inside_head = depth_mm[k] > 2.0
        brain = s[inside_head & (s >= 30.0) & (s <= 45.0)]
        brain_v[at] = float(np.median(brain)) if brain.size else 35.0
        if midline is not None:
            # Inside the cavity only, at most 100 HU: the mirror of a collection at the
            # inner table must not read the skull.
            peak = ndimage.maximum_filter(
                np.where(depth_mm[k] > 0, np.clip(s, -50.0, 100.0), -50.0), size=window
            )
            mr, mc = _mirror_pixels(rr[at].astype(np.float64), cc[at].astype(np.float64),
                                    midline)  # fmt: skip
            mr = np.clip(np.rint(mr).astype(int), 0, s.shape[0] - 1)
            mc = np.clip(np.rint(mc).astype(int), 0, s.shape[1] - 1)
            mirror_v[at] = np.maximum(peak[mr, mc], -50.0)
    mean_hu = mean(smooth_v)
    out[:, 0] = np.log(region_ml + 0.01)
    out[:, 1] = mean(blood_probability)
    max_p = np.zeros(n)
    np.maximum.at(max_p, inside, blood_probability)
    out[:, 2] = max_p
    out[:, 3] = extent_mm
    out[:, 4] = [0] + [len(s) for s in _slices_per_region(kk, inside, n)[1:]]
    out[:, 5] = mean_hu
    out[:, 6] = np.sqrt(np.maximum(mean(smooth_v**2) - mean_hu**2, 0.0))
    out[:, 7] = mean((smooth_v > 75.0).astype(np.float64))
    out[:, 8] = mean(depth_mm[kk, rr, cc].astype(np.float64))
    if midline is not None:
        out[:, 9] = mean(np.abs(midline.distance_mm(rr, cc)))
        mirror = mean(mirror_v)
        out[:, 10] = mirror - mean_hu
        out[:, 11] = mirror - mean(brain_v)
    largest = np.zeros(n)
    np.maximum.at(largest, inside, thick_v)
    out[:, 12] = 2.0 * largest * pixel_mm
    out[:, 13] = (voxels * row_mm * col_mm) / np.maximum(out[:, 4], 1.0)
    out[:, 14] = out[:, 13] / np.maximum(out[:, 12], pixel_mm) ** 2
    for label in range(1, 6):
        out[:, 14 + label] = (winner == label).astype(np.float64)
    out[0] = 0.0
    return out


def _slices_per_region(kk: np.ndarray, inside: np.ndarray, n: int) -> list[set]:
    found: list[set] = [set() for _ in range(n)]
    pairs = np.unique(np.stack([inside, kk], axis=1), axis=0)
    for region, k in pairs:
        found[int(region)].add(int(k))
    return found


@dataclass(frozen=True)
class RegionClassifier:
    """Logistic regression over :data:`REGION_FEATURES`: P(region is blood).

    ``p = 1 / (1 + exp(-(intercept + sum(coefficients * (x - mean) / scale))))``.

    Parameters
    ----------
    features : tuple of str
        Names, in the order of the coefficients (a subset of :data:`REGION_FEATURES`).
    mean, scale : tuple of float
        Standardisation of each feature (scale > 0).
    coefficients : tuple of float
        One per feature.
    intercept : float
    fitted_on : str
        Which synthetic cases (seeds, mimics) it was fitted on, for the model card.
    log_features : tuple of str
        Features that enter as ``ln(1 + max(x, 0))`` before standardisation
        (:data:`LOG_FEATURES` for classifiers fitted from package 1.2.0; empty
        reads the raw figure).
    clip_z : float or None
        Standardised figures are clipped to ``[-clip_z, clip_z]``; None: no clip.

    References
    ----------
    Hosmer DW, Lemeshow S. Applied Logistic Regression, 3rd ed., Wiley 2013.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    fitted_on: str = ""
    log_features: tuple[str, ...] = ()
    clip_z: float | None = None

    @classmethod
    def from_manifest(cls, entry: dict | None) -> RegionClassifier | None:
        """Read ``detection.region_classifier`` of a manifest; None when absent.

        Raises
        ------
        ModelPackageError
            If a feature is unknown or the lengths differ.
        """
        if not entry:
            return None
        try:
            made = cls(features=tuple(entry["features"]), mean=tuple(map(float, entry["mean"])),
                       scale=tuple(map(float, entry["scale"])),
                       coefficients=tuple(map(float, entry["coefficients"])),
                       intercept=float(entry["intercept"]),
                       fitted_on=str(entry.get("fitted_on", "")),
                       log_features=tuple(entry.get("log_features", ())),
                       clip_z=(None if entry.get("clip_z") is None
                               else float(entry["clip_z"])))  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise ModelPackageError(f"detection.region_classifier is malformed: {err}") from err
        unknown = (set(made.features) | set(made.log_features)) - set(REGION_FEATURES)
        lengths = {len(made.features), len(made.mean), len(made.scale), len(made.coefficients)}
        if unknown or len(lengths) != 1 or min(made.scale, default=1.0) <= 0:
            raise ModelPackageError(
                "detection.region_classifier: unknown features "
                f"{sorted(unknown)} or lengths {sorted(lengths)} or a scale <= 0"
            )
        return made

    def to_manifest(self) -> dict:
        """The ``detection.region_classifier`` entry (JSON types)."""
        return {"features": list(self.features), "mean": [round(v, 6) for v in self.mean],
                "scale": [round(v, 6) for v in self.scale],
                "coefficients": [round(v, 6) for v in self.coefficients],
                "intercept": round(self.intercept, 6), "fitted_on": self.fitted_on,
                "log_features": list(self.log_features), "clip_z": self.clip_z}  # fmt: skip

    def _columns(self) -> list[int]:
        return [REGION_FEATURES.index(f) for f in self.features]

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(blood) of each row of a :func:`region_features` array.

        Parameters
        ----------
        features : numpy.ndarray
            float (regions, len(REGION_FEATURES)).

        Returns
        -------
        numpy.ndarray
            float64 (regions,) in [0, 1].
        """
        x = _standardised(
            _transformed(features, self.features, self.log_features),
            np.asarray(self.mean),
            np.asarray(self.scale),
            self.clip_z,
        )
        z = self.intercept + x @ np.asarray(self.coefficients)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _transformed(
    features: np.ndarray, names: Sequence[str], log_features: Sequence[str]
) -> np.ndarray:
    """Columns ``names`` of a :func:`region_features` array, log features as ln(1 + x)."""
    x = np.asarray(features, dtype=np.float64)[:, [REGION_FEATURES.index(f) for f in names]]
    for i, name in enumerate(names):
        if name in log_features:
            x[:, i] = np.log1p(np.maximum(x[:, i], 0.0))
    return x


def _standardised(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, clip_z: float | None
) -> np.ndarray:
    z = (x - mean) / scale
    return z if clip_z is None else np.clip(z, -clip_z, clip_z)


def fit_region_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    names: Sequence[str] = REGION_FEATURES,
    l2: float = 1.0,
    weights: np.ndarray | None = None,
    fitted_on: str = "",
    iterations: int = 50,
    log_features: Sequence[str] = (),
    clip_z: float | None = None,
) -> RegionClassifier:
    """Fit :class:`RegionClassifier` by Newton-Raphson (IRLS) with an L2 penalty.

    Parameters
    ----------
    features : numpy.ndarray
        float (regions, len(REGION_FEATURES)).
    labels : numpy.ndarray
        bool (regions,): the region is (mostly) true blood.
    names : sequence of str
        Features to use.
    l2 : float
        Penalty on the standardised coefficients (not the intercept).
    weights : numpy.ndarray or None
        float (regions,): weight of each region; 1 when None.
    fitted_on : str
        Provenance, stored with the coefficients.
    iterations : int
        Newton steps (it converges in well under 20).
    log_features : sequence of str
        Features (among ``names``) fitted as ``ln(1 + x)`` (:data:`LOG_FEATURES`).
    clip_z : float or None
        Clip of the standardised figures, in fitting and prediction (:data:`CLIP_Z`).

    Returns
    -------
    RegionClassifier

    Raises
    ------
    ValueError
        If the labels hold only one class.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("the region labels hold only one class")
    x = _transformed(features, tuple(names), tuple(log_features))
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-6] = 1.0
    z = np.hstack([np.ones((x.shape[0], 1)), _standardised(x, mu, sd, clip_z)])
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    beta = np.zeros(z.shape[1])
    penalty = np.eye(z.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -40, 40)))
        gradient = z.T @ (w * (y - p)) - penalty @ beta
        hessian = (z * (w * p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return RegionClassifier(features=tuple(names), mean=tuple(mu.tolist()),
                            scale=tuple(sd.tolist()), coefficients=tuple(beta[1:].tolist()),
                            intercept=float(beta[0]), fitted_on=fitted_on,
                            log_features=tuple(f for f in names if f in log_features),
                            clip_z=clip_z)  # fmt: skip
