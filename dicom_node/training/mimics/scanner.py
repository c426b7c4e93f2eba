"""Scanner variety: reconstruction kernel, noise level and field of view of a head CT.

:func:`vary_scanner` changes what another scanner or protocol would: a
smooth or sharp kernel, the noise (x0.7-x2 of the scan's own), and a partial
field of view outside the skull. Slice thickness is not varied.

References
----------
Barrett JF, Keat N. Artifacts in CT: recognition and avoidance.
RadioGraphics. 2004;24(6):1679-1691 (noise, kernels and the scan field of
view).
"""

from __future__ import annotations

import cv2
import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.mimics.common import _PADDING_MAX_HU, MimicSpec, _tuple3
from dicom_node.training.synthetic import _high_pass_sd

#: Scanner variety: Gaussian sigma (pixels) of a smooth kernel.
SMOOTH_KERNEL_SIGMA_PX = (0.5, 1.0)
#: ... unsharp-mask sigma (pixels) and amount of a sharp kernel.
SHARP_KERNEL_SIGMA_PX = (1.0, 2.0)
SHARP_KERNEL_AMOUNT = (0.3, 1.0)
#: ... factor on the scan's noise (drawn log-uniformly).
NOISE_FACTOR = (0.7, 2.0)
#: ... probability of a partial field of view.
PARTIAL_FOV_PROBABILITY = 0.35


def _scan_noise_sd(hu: np.ndarray, anatomy: HeadAnatomy) -> tuple[float, int]:
    area = anatomy.brain.sum(axis=(1, 2))
    k = int(np.argmax(area))
    return _high_pass_sd(hu[k].astype(np.float64), anatomy.brain[k]), k


def vary_scanner(
    hu: np.ndarray,
    volume: CTVolume,
    anatomy: HeadAnatomy,
    rng: np.random.Generator,
) -> tuple[MimicSpec, ...]:
    """Change kernel, noise and field of view of a head CT as another scanner would, in place.

    1. **Kernel**: unchanged, smooth (in-plane Gaussian,
       :data:`SMOOTH_KERNEL_SIGMA_PX`) or sharp (unsharp mask
       :data:`SHARP_KERNEL_SIGMA_PX`, :data:`SHARP_KERNEL_AMOUNT`), a third
       each.
    2. **Noise**: a factor drawn log-uniformly from :data:`NOISE_FACTOR` on
       the scan's own high-pass noise SD (in brain): above 1, correlated
       noise is added; below 1, the image is mixed with a 1-pixel Gaussian
       blur of itself until the noise falls by that factor.
    3. **Field of view** (:data:`PARTIAL_FOV_PROBABILITY`): everything beyond
       a straight cut at one side, or outside a circle, is set to padding
       (the scan's padding value, else -1024 HU); the cut keeps 3 mm clear of
       every bone voxel (above 300 HU) of the head, so the skull stays whole.

    Reconstruction padding keeps its value throughout. Slice thickness is not
    changed.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 (slices, rows, columns) HU, modified in place.
    volume : CTVolume
        Geometry of ``hu``.
    anatomy : HeadAnatomy
        Anatomy of the case (brain for the noise measure, the head's centre).
    rng : numpy.random.Generator
        Source of every draw.

    Returns
    -------
    tuple of MimicSpec
        One per change made (kinds ``"kernel"``, ``"noise"``,
        ``"field of view"``).

    Raises
    ------
    ValueError
        If ``hu`` is not float32 of the volume's shape.

    References
    ----------
    Barrett JF, Keat N. RadioGraphics. 2004;24(6):1679-1691 (noise, kernels
    and the scan field of view).
    """
    if hu.dtype != np.float32 or hu.shape != volume.shape:
        raise ValueError(f"hu must be float32 of shape {volume.shape}, got {hu.dtype} {hu.shape}")
    slices, rows, columns = hu.shape
    padding = hu < _PADDING_MAX_HU
    has_padding = bool(padding.any())
    pad_value = float(hu.min()) if has_padding else -1024.0
    k_all, r_all, c_all = np.nonzero(anatomy.intracranial[:, ::4, ::4])
    if k_all.size:
        head = volume.pixel_to_patient(
            int(np.median(k_all)), 4.0 * r_all.mean(), 4.0 * c_all.mean()
        )
    else:
        head = volume.pixel_to_patient(slices // 2, rows / 2.0, columns / 2.0)
    before = hu.copy()
    specs: list[MimicSpec] = []

    def record(kind: str, site: str) -> None:
        delta = hu - before
        inside = anatomy.intracranial
        values = delta[inside] if inside.any() else delta.ravel()
        i = int(np.argmax(np.abs(values))) if values.size else 0
        change = float(values[i]) if values.size else 0.0
        changed = np.flatnonzero(np.abs(delta).reshape(slices, -1).max(axis=1) > 1e-3)
        specs.append(
            MimicSpec(
                kind=kind,
                site=site,
                centre_mm=_tuple3(head),
                peak_hu=0.0,
                change_hu=round(change, 3),
                slices=tuple(int(k) for k in changed),
            )
        )
        before[...] = hu

    source = np.where(padding, np.float32(-1000.0), hu)
    u = rng.random()
    if u < 1.0 / 3.0:
        pass
    elif u < 2.0 / 3.0:
        sigma = float(rng.uniform(*SMOOTH_KERNEL_SIGMA_PX))
        for k in range(slices):
            hu[k] = cv2.GaussianBlur(source[k], (0, 0), sigma)
        hu[padding] = before[padding]
        record("kernel", f"smooth: Gaussian sigma {sigma:.2f} px")
    else:
        sigma = float(rng.uniform(*SHARP_KERNEL_SIGMA_PX))
        amount = float(rng.uniform(*SHARP_KERNEL_AMOUNT))
        for k in range(slices):
            blur = cv2.GaussianBlur(source[k], (0, 0), sigma)
            hu[k] = source[k] + np.float32(amount) * (source[k] - blur)
        hu[padding] = before[padding]
        record("kernel", f"sharp: unsharp mask sigma {sigma:.2f} px, amount {amount:.2f}")

    factor = float(np.exp(rng.uniform(np.log(NOISE_FACTOR[0]), np.log(NOISE_FACTOR[1]))))
    sd, k_ref = _scan_noise_sd(hu, anatomy)
    if sd > 0 and factor > 1.0:
        extra = sd * np.sqrt(factor * factor - 1.0)
        white = rng.standard_normal(hu.shape, dtype=np.float32)
        for k in range(slices):
            white[k] = cv2.GaussianBlur(white[k], (0, 0), 0.7)
        unit = _high_pass_sd(white[k_ref].astype(np.float64))
        noise = white * np.float32(extra / max(unit, 1e-6))
        noise[padding] = 0.0
        hu += noise
        record("noise", f"x{factor:.2f}")
    elif sd > 0 and factor < 1.0:
        source = np.where(padding, np.float32(-1000.0), hu)
        blurred = np.stack([cv2.GaussianBlur(source[k], (0, 0), 1.0) for k in range(slices)])
        goal = factor * sd
        best_w, best_err = 0.0, np.inf
        for w in np.linspace(0.0, 1.0, 21):
            mix = (1.0 - w) * source[k_ref] + w * blurred[k_ref]
            err = abs(_high_pass_sd(mix.astype(np.float64), anatomy.brain[k_ref]) - goal)
            if err < best_err:
                best_w, best_err = float(w), err
        hu[...] = (1.0 - best_w) * source + best_w * blurred
        hu[padding] = before[padding]
        record("noise", f"x{factor:.2f} (mixed {best_w:.2f} with a 1 px blur)")

    if rng.random() < PARTIAL_FOV_PROBABILITY:
        row_mm, col_mm = volume.pixel_spacing_mm
        bone = (hu > 300.0).any(axis=0)
        body = (hu > -300.0).any(axis=0)
        if bone.any():
            margin_r, margin_c = 3.0 / row_mm, 3.0 / col_mm
            br, bc = np.nonzero(bone)
            fov = np.ones((rows, columns), dtype=bool)
            if rng.random() < 0.5:
                side = str(rng.choice(["left", "right", "anterior", "posterior"]))
                # Image columns grow to the row direction; rows to the column direction.
                if side in ("left", "right"):
                    grow_left = float(volume.row_direction[0]) >= 0
                    low_end = (side == "right") == grow_left
                    if low_end:
                        limit = int(bc.min() - margin_c)
                        cut = int(rng.uniform(0.3, 1.0) * max(limit, 0))
                        fov[:, :cut] = False
                    else:
                        limit = int(bc.max() + margin_c)
                        cut = columns - int(rng.uniform(0.3, 1.0) * max(columns - 1 - limit, 0))
                        fov[:, cut:] = False
                else:
                    low_end = (side == "anterior") == (float(volume.column_direction[1]) >= 0)
                    if low_end:
                        limit = int(br.min() - margin_r)
                        cut = int(rng.uniform(0.3, 1.0) * max(limit, 0))
                        fov[:cut, :] = False
                    else:
                        limit = int(br.max() + margin_r)
                        cut = rows - int(rng.uniform(0.3, 1.0) * max(rows - 1 - limit, 0))
                        fov[cut:, :] = False
                site = f"cut at the {side}"
            else:
                centre_r, centre_c = (rows - 1) / 2.0, (columns - 1) / 2.0
                radius_needed = (
                    float(np.max(np.hypot((br - centre_r) * row_mm, (bc - centre_c) * col_mm)))
                    + 3.0
                )
                radius = radius_needed + float(rng.uniform(0.0, 20.0))
                rr, cc = np.mgrid[0:rows, 0:columns]
                fov = np.hypot((rr - centre_r) * row_mm, (cc - centre_c) * col_mm) <= radius
                site = f"circle of radius {radius:.0f} mm"
            outside = ~fov & body
            if (~fov).any():
                hu[:, ~fov] = np.float32(pad_value)
                record("field of view", site + (" through soft tissue" if outside.any() else ""))
    return tuple(specs)
