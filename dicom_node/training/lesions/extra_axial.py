"""Extra-axial collections: epidural lenses and subdural crescents, falx and tentorium bands.

- **epidural**: a biconvex lens against the inner table, thickest in its
  centre, confined to an arc of at most :data:`EPIDURAL_MAX_ARC_DEG` and a
  cranio-caudal half-span of :data:`EPIDURAL_MAX_HALF_SPAN_MM` (it does not
  cross sutures).
- **subdural**: a crescent of almost uniform thickness (at most
  :data:`SUBDURAL_MAX_THICKNESS_MM`) along the inner table over an arc of up
  to :data:`SUBDURAL_MAX_ARC_DEG`; or a thin parafalcine band along one side
  of the mid-sagittal line, above the ventricles; or a thin crescent on the
  upper surface of one leaf of the tentorium
  (:class:`~dicom_node.training.landmarks.TentoriumModel`).

Depth is measured from the convex hull of the intracranial section, so
convexity collections follow the vault and do not run along the sphenoid
wing or petrous ridge.

References
----------
Osborn AG. Osborn's Brain: Imaging, Pathology, and Anatomy. 2nd ed.
Elsevier; 2017 (chapter "Trauma": epidural and subdural hemorrhage).
Parizel PM, et al. Intracranial hemorrhage: principles of CT and MRI
interpretation. Eur Radiol. 2001;11(9):1770-1783.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.training.landmarks import find_landmarks, random_tentorium
from dicom_node.training.lesions.geometry import (
    _bounding_box,
    _expand_slices,
    _geometric_lesion,
    _head_centre,
    _in_plane_frame,
    _Sampler,
    _wrap,
)

#: Largest arc (degrees) of an epidural hematoma (about one bone between sutures).
EPIDURAL_MAX_ARC_DEG = 70.0
#: Largest cranio-caudal half-span (mm) of an epidural hematoma.
EPIDURAL_MAX_HALF_SPAN_MM = 30.0
#: Largest arc (degrees) of a convexity subdural hematoma (a third of the circumference).
SUBDURAL_MAX_ARC_DEG = 120.0
#: Largest thickness (mm) of a subdural hematoma.
SUBDURAL_MAX_THICKNESS_MM = 15.0
#: Largest volume (mL) of a falx subdural hematoma (larger ones go on the convexity).
SUBDURAL_FALX_MAX_ML = 15.0
#: Largest volume (mL) of a tentorial subdural hematoma (larger ones go on the convexity).
SUBDURAL_TENTORIUM_MAX_ML = 10.0
#: Largest thickness (mm) of a tentorial subdural hematoma.
SUBDURAL_TENTORIUM_MAX_THICKNESS_MM = 6.0


def _pick_table_point(
    sampler: _Sampler, rng: np.random.Generator, centre: np.ndarray, min_area_fraction: float
) -> tuple[float, float, float]:
    """A random point on the inner table of a large slice: (angle rad, radius mm, z mm)."""
    anatomy = sampler.anatomy
    area = anatomy.intracranial.sum(axis=(1, 2))
    eligible = np.flatnonzero(area >= min_area_fraction * area.max())
    k = int(rng.choice(eligible))
    edge_mm = 1.5 * max(sampler.row_mm, sampler.col_mm)
    mask = anatomy.intracranial[k]
    hull = np.zeros(mask.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, _hull(mask), 1)
    hull_depth = ndimage.distance_transform_edt(hull, sampling=(sampler.row_mm, sampler.col_mm))
    rows, cols = np.nonzero(mask & (hull_depth <= edge_mm + 1.0))
    if rows.size == 0:
        rows, cols = np.nonzero(mask & (anatomy.depth_mm[k] <= edge_mm))
    i = int(rng.integers(rows.size))
    point = sampler.voxel_points(np.array([k]), rows[i : i + 1] * 1.0, cols[i : i + 1] * 1.0)[0]
    d = point - centre
    u, v, z = float(d @ sampler.rd), float(d @ sampler.cd), float(d @ sampler.n)
    return float(np.arctan2(v, u)), float(np.hypot(u, v)), z


def _hull(mask: np.ndarray) -> np.ndarray:
    """Convex hull (OpenCV points) of a non-empty 2D mask."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return cv2.convexHull(np.concatenate(contours, axis=0))


def _convexity_depth(sampler: _Sampler, region: np.ndarray, margin_px: int) -> np.ndarray:
    """In-plane distance (mm) from the convex hull of each slice's intracranial mask.

    Inside the intracranial mask only (0 elsewhere), on the slices and box of
    ``region``. Unlike the distance to the mask edge it ignores concave parts of
    the inner table (sphenoid wing, petrous ridge, falx notch), so convexity
    collections hug the vault, not the skull base.
    """
    anatomy = sampler.anatomy
    field = np.zeros(sampler.shape, dtype=np.float32)
    box = _bounding_box(region, margin_px + 8)
    if box is None:
        return field
    k0, k1, r0, r1, c0, c1 = box
    k0, k1 = _expand_slices(sampler, k0, k1)
    for k in range(k0, k1):
        mask = anatomy.intracranial[k]
        if not mask.any():
            continue
        hull = _hull(mask)
        filled = np.zeros(mask.shape, dtype=np.uint8)
        cv2.fillConvexPoly(filled, hull, 1)
        crop = filled[r0:r1, c0:c1].astype(bool)
        distance = ndimage.distance_transform_edt(
            crop, sampling=(sampler.row_mm, sampler.col_mm)
        ).astype(np.float32)
        field[k, r0:r1, c0:c1] = np.where(mask[r0:r1, c0:c1], distance, 0.0)
    return field


def _convexity_region(
    sampler: _Sampler,
    centre: np.ndarray,
    theta0: float,
    half_arc: float,
    z0: float,
    half_span: float,
    depth_max: float,
) -> np.ndarray:
    """Voxels (at slice centres) that may hold a convexity lesion, with slack."""
    anatomy = sampler.anatomy
    slices = sampler.shape[0]
    region = np.zeros(sampler.shape, dtype=bool)
    z_slices = sampler.origins @ sampler.n - centre @ sampler.n
    thick = np.abs(sampler.offsets).max(axis=1)
    for k in range(slices):
        if abs(z_slices[k] - z0) > half_span + thick[k] + 2.0:
            continue
        near = anatomy.intracranial[k] & (anatomy.depth_mm[k] <= depth_max + 3.0)
        if not near.any():
            continue
        rows, cols = np.nonzero(near)
        d = sampler.voxel_points(np.full(rows.size, k), rows * 1.0, cols * 1.0) - centre
        dtheta = np.abs(_wrap(np.arctan2(d @ sampler.cd, d @ sampler.rd) - theta0))
        ok = dtheta <= half_arc * 1.15 + 0.05
        region[k, rows[ok], cols[ok]] = True
    return region


def _epidural(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    centre = _head_centre(sampler)
    theta0, radius, z0 = _pick_table_point(sampler, rng, centre, 0.7)
    radius = max(radius, 30.0)
    # Footprint from the volume: lens of thickness kappa*a over an ellipse a x rho*a.
    kappa, rho = rng.uniform(0.25, 0.5), rng.uniform(0.6, 1.0)
    a = (2.0 * target_ml * 1000.0 / (np.pi * kappa * rho)) ** (1.0 / 3.0)
    half_arc = min(a / radius, np.deg2rad(EPIDURAL_MAX_ARC_DEG) / 2.0)
    half_span = float(np.clip(rho * a, 8.0, EPIDURAL_MAX_HALF_SPAN_MM))
    depth_max = 45.0
    coords = _in_plane_frame(sampler, centre)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        theta, z = coords(k, j, box)
        q = (_wrap(theta - theta0) / half_arc) ** 2 + ((z - z0) / half_span) ** 2
        depth = sampler.sample(convex, k, j, box)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(q.shape, np.inf, dtype=np.float32)
        ok = inside & (q < 1.0)
        out[ok] = depth[ok] / (1.0 - q[ok])
        return out

    region = _convexity_region(sampler, centre, theta0, half_arc, z0, half_span, depth_max)
    convex = _convexity_depth(sampler, region, 4)
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, depth_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _subdural(
    sampler: _Sampler,
    rng: np.random.Generator,
    target_ml: float,
    *,
    falx_probability: float,
    tentorium_probability: float,
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A subdural hematoma along the falx, on the tentorium or (else) on the convexity.

    ``falx_probability`` and ``tentorium_probability`` are
    :data:`~dicom_node.training.lesions.SUBDURAL_FALX_PROBABILITY` and
    :data:`~dicom_node.training.lesions.SUBDURAL_TENTORIUM_PROBABILITY`, as the
    package reads them at each call.
    """
    centre = _head_centre(sampler)
    u = rng.random()
    falx = u < falx_probability
    tentorial = not falx and u < falx_probability + tentorium_probability
    if falx and target_ml <= SUBDURAL_FALX_MAX_ML:
        origin, fraction, _ = _subdural_falx(sampler, rng, target_ml, centre)
        voxel_ml = sampler.voxel_ml[origin[0] : origin[0] + fraction.shape[0]]
        if float(fraction.sum(axis=(1, 2)) @ voxel_ml) >= 0.9 * target_ml:
            return origin, fraction, None
        # The falx is too short here for this volume: put it on the convexity.
    if tentorial and target_ml <= SUBDURAL_TENTORIUM_MAX_ML:
        try:
            origin, fraction, _ = _subdural_tentorium(sampler, rng, target_ml)
        except ValueError:
            pass  # no tentorium in this anatomy (no ventricles to find it by)
        else:
            voxel_ml = sampler.voxel_ml[origin[0] : origin[0] + fraction.shape[0]]
            if float(fraction.sum(axis=(1, 2)) @ voxel_ml) >= 0.9 * target_ml:
                return origin, fraction, None
        # The tentorium holds too little here: put it on the convexity.
    theta0, radius, z0 = _pick_table_point(sampler, rng, centre, 0.7)
    radius = max(radius, 30.0)
    # A crescent: thin for its extent, thicker when large (about 2-4 mm at 3 mL, 10-14 at 80).
    thickness = float(
        np.clip(rng.uniform(0.7, 1.3) * (2.0 + 0.12 * target_ml), 2.0, SUBDURAL_MAX_THICKNESS_MM)
    )
    half_arc = np.deg2rad(rng.uniform(35.0, SUBDURAL_MAX_ARC_DEG / 2.0))
    half_span = rng.uniform(25.0, 50.0)
    area = 4.0 * half_arc * radius * half_span * 0.85
    scale = np.sqrt(target_ml * 1000.0 / thickness / area)
    half_arc = float(
        np.clip(half_arc * scale, np.deg2rad(20.0), np.deg2rad(SUBDURAL_MAX_ARC_DEG / 2.0))
    )
    half_span = float(np.clip(half_span * scale, 10.0, 50.0))
    depth_max = SUBDURAL_MAX_THICKNESS_MM + 3.0
    coords = _in_plane_frame(sampler, centre)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        theta, z = coords(k, j, box)
        x = (_wrap(theta - theta0) / half_arc) ** 4
        y = ((z - z0) / half_span) ** 4
        shape = np.sqrt(np.clip(1.0 - x, 0.0, 1.0) * np.clip(1.0 - y, 0.0, 1.0))
        depth = sampler.sample(convex, k, j, box)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & (shape > 0.0)
        out[ok] = depth[ok] / shape[ok]
        return out

    region = _convexity_region(sampler, centre, theta0, half_arc, z0, half_span, depth_max)
    convex = _convexity_depth(sampler, region, 4)
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, depth_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _midline_axis(sampler: _Sampler, slices: np.ndarray) -> np.ndarray:
    """Unit in-plane vector (rows mm, columns mm) of the head's long (antero-posterior) axis."""
    k, r, c = np.nonzero(sampler.anatomy.intracranial[slices][:, ::2, ::2])
    y = (r * 2.0 - r.mean() * 2.0) * sampler.row_mm
    x = (c * 2.0 - c.mean() * 2.0) * sampler.col_mm
    moments = np.array([[np.mean(y * y), np.mean(x * y)], [np.mean(x * y), np.mean(x * x)]])
    _values, vectors = np.linalg.eigh(moments)
    axis = vectors[:, -1]
    return axis if axis[0] >= 0 else -axis


def _subdural_falx(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float, centre: np.ndarray
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A thin parafalcine band on one side of the midline, supratentorial."""
    anatomy = sampler.anatomy
    side = 1.0 if rng.random() < 0.5 else -1.0
    half_length = rng.uniform(25.0, 50.0)
    half_span = rng.uniform(15.0, 35.0)
    thickness = rng.uniform(2.0, 5.0)
    # Extent for the volume: thickness x (2 x 0.8 half-length) x (2 x 0.8 half-span).
    scale = max(np.sqrt(target_ml * 1000.0 / thickness / (2.56 * half_length * half_span)), 1.0)
    half_length = min(half_length * scale, 60.0)
    half_span = min(half_span * scale, 45.0)
    area = anatomy.intracranial.sum(axis=(1, 2))
    z_slices = (sampler.origins - centre) @ sampler.n
    eligible = np.flatnonzero((area >= 0.5 * area.max()) & (z_slices >= -5.0))
    if eligible.size == 0:
        eligible = np.flatnonzero(area >= 0.5 * area.max())
    k_seed = int(rng.choice(eligible))
    z0 = float(z_slices[k_seed])
    t0 = rng.uniform(-20.0, 20.0)
    band_max = 8.0
    axis = _midline_axis(sampler, eligible)  # (rows, columns) components, mm
    normal = np.array([-axis[1], axis[0]])
    centroid_row = np.array(
        [
            np.mean(np.nonzero(anatomy.intracranial[k])[0]) if area[k] else sampler.shape[1] / 2
            for k in range(sampler.shape[0])
        ]
    )
    midline = anatomy.midline_column
    # The falx ends above the corpus callosum: no blood within about 10 mm of the ventricles.
    kernel = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE,
        (2 * int(10.0 / sampler.col_mm) + 1, 2 * int(10.0 / sampler.row_mm) + 1),
    )
    near_ventricle = np.zeros(sampler.shape, dtype=bool)

    def line_coords(k: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy = (rows - centroid_row[k]) * sampler.row_mm
        dx = (cols - midline[k]) * sampler.col_mm
        return dy * axis[0] + dx * axis[1], (dy * normal[0] + dx * normal[1]) * side

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = box
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        cols = np.arange(c0, c1, dtype=np.float32)[None, :]
        along, distance = line_coords(k, rows, cols)
        z = sampler.project(sampler.n, k, j, box) - np.float32(centre @ sampler.n)
        shape = np.sqrt(
            np.clip(1.0 - ((along - t0) / half_length) ** 4, 0.0, 1.0)
            * np.clip(1.0 - ((z - z0) / half_span) ** 4, 0.0, 1.0)
        )
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & (shape > 0.0) & (distance >= 0.0) & ~near_ventricle[k, r0:r1, c0:c1]
        out[ok] = (distance / np.maximum(shape, 1e-6))[ok]
        return out

    rows = np.arange(sampler.shape[1], dtype=np.float32)[:, None]
    cols = np.arange(sampler.shape[2], dtype=np.float32)[None, :]
    region = np.zeros(sampler.shape, dtype=bool)
    for k in np.flatnonzero(np.abs(z_slices - z0) <= half_span + 8.0):
        along, distance = line_coords(int(k), rows, cols)
        if anatomy.ventricles[k].any():
            near_ventricle[k] = cv2.dilate(anatomy.ventricles[k].astype(np.uint8), kernel) > 0
        region[k] = ~near_ventricle[k] & (
            anatomy.intracranial[k]
            & (np.abs(distance) <= band_max + 2.0)
            & (np.abs(along - t0) <= half_length + 2.0)
        )
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, band_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None


def _subdural_tentorium(
    sampler: _Sampler, rng: np.random.Generator, target_ml: float
) -> tuple[tuple[int, int, int], np.ndarray, None]:
    """A thin crescent on the upper surface of one leaf of the tentorium."""
    landmarks = find_landmarks(sampler.volume, sampler.anatomy)
    model = random_tentorium(landmarks, rng)  # ValueError without a pineal site
    side = 1.0 if rng.random() < 0.5 else -1.0
    band_max = SUBDURAL_TENTORIUM_MAX_THICKNESS_MM
    thickness = float(rng.uniform(2.0, band_max))
    rho0 = float(rng.uniform(25.0, 45.0))
    aspect = float(rng.uniform(1.2, 2.5))
    # Footprint for the volume: a superellipse patch (about 0.8 of its box) x 0.6 x thickness.
    area = target_ml * 1000.0 / (0.6 * thickness)
    half_width = float(np.clip(np.sqrt(area / (3.2 * aspect)), 6.0, rho0 - 5.0))
    half_angle = float(np.clip(aspect * half_width / rho0, np.deg2rad(15.0), np.deg2rad(70.0)))
    theta0 = float(np.deg2rad(rng.uniform(35.0, 110.0)))

    def patch(x: np.ndarray, y: np.ndarray, slack: float) -> tuple[np.ndarray, np.ndarray]:
        theta = np.arctan2(x * np.float32(side), y)
        rho = np.sqrt(x * x + y * y)
        a = ((theta - np.float32(theta0)) / np.float32(half_angle * slack)) ** 4
        b = ((rho - np.float32(rho0)) / np.float32(half_width * slack)) ** 4
        shape = np.sqrt(np.clip(1.0 - a, 0.0, 1.0) * np.clip(1.0 - b, 0.0, 1.0))
        return shape, (x * np.float32(side) > 0.0) & model.on_sheet(x, y)

    def level(k: int, j: int, box: tuple[int, int, int, int]) -> np.ndarray:
        x, y, z = model.head_coordinates(lambda e: sampler.project(e, k, j, box))
        height = model.height_mm(x, y, z)
        shape, allowed = patch(x, y, 1.0)
        inside = sampler.sample(sampler.inside, k, j, box) >= 0.5
        out = np.full(shape.shape, np.inf, dtype=np.float32)
        ok = inside & allowed & (shape > 0.0) & (height >= 0.0)
        out[ok] = (height / np.maximum(shape, 1e-6))[ok]
        return out

    region = np.zeros(sampler.shape, dtype=bool)
    full = (0, sampler.shape[1], 0, sampler.shape[2])
    middle = sampler.samples // 2
    thick = np.abs(sampler.offsets).max(axis=1)
    for k in range(sampler.shape[0]):
        if not sampler.anatomy.intracranial[k].any():
            continue

        def dot(e: np.ndarray, k: int = k) -> np.ndarray:
            return sampler.project(e, k, middle, full)

        x, y, z = model.head_coordinates(dot)
        height = model.height_mm(x, y, z)
        shape, allowed = patch(x, y, 1.15)
        region[k] = (
            sampler.anatomy.intracranial[k]
            & allowed
            & (shape > 0.0)
            & (np.abs(height) <= band_max + thick[k] + 3.0)
        )
    origin, levels, s = _geometric_lesion(sampler, region, level, target_ml, band_max, 4)
    return origin, (levels <= s).mean(axis=1, dtype=np.float32), None
