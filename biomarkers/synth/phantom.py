"""Synthetic anatomy, lesions and scanner effects (pure functions, numpy arrays).

Coordinates are DICOM patient coordinates (**LPS, mm**). Volumes are returned as
``[slice, row, column]`` arrays (``z, y, x``), the order in which DICOM slices are
written; slice ``k`` lies at ``z = z_positions[k]``, row ``r`` at
``y = origin_y + r * spacing`` and column ``c`` at ``x = origin_x + c * spacing``
(ImageOrientationPatient ``[1,0,0,0,1,0]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Half-life of F-18 in seconds (DICOM RadionuclideHalfLife).
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class Centre:
    """Scanner profile of one centre (the 'batch' effect harmonisation must remove).

    Attributes:
        index: 1-based centre number (``C<index>`` in patient ids).
        ct_offset_hu: additive calibration offset of the CT numbers (HU).
        ct_noise_hu: standard deviation of white noise before reconstruction filtering (HU).
        ct_kernel_sigma: in-plane Gaussian blur of the reconstruction kernel (pixels).
        kernel_name: DICOM ConvolutionKernel written for the kernel.
        slice_thickness_mm: CT slice thickness = slice spacing (mm).
        pixel_spacing_mm: CT in-plane pixel size (mm); PET uses twice this.
        pet_slice_mm: PET slice thickness = spacing (mm).
        pet_scale: multiplicative PET calibration error (dimensionless).
        manufacturer: DICOM Manufacturer.
        roi_name: how this centre names the lesion contour in its RTSTRUCTs.
    """

    index: int
    ct_offset_hu: float
    ct_noise_hu: float
    ct_kernel_sigma: float
    kernel_name: str
    slice_thickness_mm: float
    pixel_spacing_mm: float
    pet_slice_mm: float
    pet_scale: float
    manufacturer: str
    roi_name: str

    @property
    def code(self) -> str:
        return f"C{self.index}"


_TEMPLATES = [
    dict(ct_offset_hu=0.0, ct_noise_hu=12.0, ct_kernel_sigma=0.4, kernel_name="STANDARD", slice_thickness_mm=3.0,
         pixel_spacing_mm=3.5, pet_slice_mm=4.0, pet_scale=1.0, manufacturer="GE MEDICAL SYSTEMS", roi_name="GTV"),
    dict(ct_offset_hu=45.0, ct_noise_hu=22.0, ct_kernel_sigma=0.0, kernel_name="B45f", slice_thickness_mm=4.0,
         pixel_spacing_mm=3.6, pet_slice_mm=5.0, pet_scale=1.25, manufacturer="SIEMENS", roi_name="GTV_primary"),
    dict(ct_offset_hu=-35.0, ct_noise_hu=16.0, ct_kernel_sigma=0.7, kernel_name="FC13", slice_thickness_mm=3.5,
         pixel_spacing_mm=3.4, pet_slice_mm=4.0, pet_scale=0.85, manufacturer="TOSHIBA", roi_name="gtv"),
]


def centre_profile(index: int) -> Centre:
    """Scanner profile of centre ``index`` (1-based); templates repeat with shifted offsets after 3."""
    t = dict(_TEMPLATES[(index - 1) % len(_TEMPLATES)])
    cycle = (index - 1) // len(_TEMPLATES)
    t["ct_offset_hu"] += 20.0 * cycle
    t["pet_scale"] *= 1.0 + 0.1 * cycle
    return Centre(index=index, **t)


@dataclass(frozen=True)
class Lesion:
    """An ellipsoidal lesion (LPS mm) and the properties the hidden outcome drives."""

    centre_lps: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]  # along x, y (before rotation) and z
    angle_rad: float  # in-plane rotation about z
    ct_mean_hu: float  # lesion density before scanner effects (HU)
    ct_texture_sd_hu: float  # heterogeneity (sd of a correlated noise field, HU)
    suv_peak: float  # true SUV of the lesion (before PET calibration error)

    @property
    def radius_mm(self) -> float:
        """Equivalent sphere radius (mm)."""
        a, b, c = self.semi_axes_mm
        return float((a * b * c) ** (1 / 3))

    @property
    def volume_ml(self) -> float:
        a, b, c = self.semi_axes_mm
        return float(4.0 / 3.0 * np.pi * a * b * c / 1000.0)


def sample_lesion(rng: np.random.Generator, outcome: int) -> Lesion:
    """Draw a lesion: larger, denser, more heterogeneous and more avid when ``outcome == 1``."""
    radius = float(np.clip(rng.normal(16.0 if outcome else 14.0, 2.4), 8.0, 24.0))
    axes = tuple(float(radius * f) for f in rng.uniform(0.85, 1.15, size=3))
    # the lesion sits in the right lung (patient's right = -x in LPS)
    cx = float(rng.uniform(-70.0, -60.0))
    cy = float(rng.uniform(-12.0, 12.0))
    cz = float(rng.uniform(-20.0, 20.0))
    return Lesion(
        centre_lps=(cx, cy, cz),
        semi_axes_mm=axes,  # type: ignore[arg-type]
        angle_rad=float(rng.uniform(0, np.pi)),
        ct_mean_hu=float(rng.normal(47.0 if outcome else 35.0, 8.0)),
        ct_texture_sd_hu=float(abs(rng.normal(20.0 if outcome else 14.0, 5.0))),
        suv_peak=float(max(1.5, rng.normal(6.0 if outcome else 4.5, 1.3))),
    )


def lesion_norm_radius(lesion: Lesion, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) at LPS points (broadcast arrays)."""
    cx, cy, cz = lesion.centre_lps
    a, b, c = lesion.semi_axes_mm
    ca, sa = np.cos(lesion.angle_rad), np.sin(lesion.angle_rad)
    dx, dy = x - cx, y - cy
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    return np.sqrt((u / a) ** 2 + (v / b) ** 2 + ((z - cz) / c) ** 2)


def lesion_contour(lesion: Lesion, z: float, n_points: int = 48) -> np.ndarray | None:
    """Closed planar contour of the lesion at slice position ``z`` (``(n, 3)`` LPS mm), or None."""
    cx, cy, cz = lesion.centre_lps
    a, b, c = lesion.semi_axes_mm
    f = 1.0 - ((z - cz) / c) ** 2
    if f <= 0.02:
        return None
    s = np.sqrt(f)
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    u, v = a * s * np.cos(t), b * s * np.sin(t)
    ca, sa = np.cos(lesion.angle_rad), np.sin(lesion.angle_rad)
    x = cx + ca * u - sa * v
    y = cy + sa * u + ca * v
    return np.stack([x, y, np.full_like(x, z)], axis=1)


def _coords(n_xy: int, spacing: float, z_positions: np.ndarray):
    origin = -(n_xy - 1) / 2.0 * spacing
    xs = origin + spacing * np.arange(n_xy)
    return xs, xs.copy(), np.asarray(z_positions, float), origin


def _smooth_field(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox)
    return f / (f.std() + 1e-12)


def _occupancy(r_norm: np.ndarray, radius_mm: float, edge_mm: float) -> np.ndarray:
    """Partial-volume occupancy of the lesion (0..1) from the normalised radius."""
    return np.clip(0.5 - (r_norm - 1.0) * radius_mm / edge_mm, 0.0, 1.0)


def body_masks(x: np.ndarray, y: np.ndarray):
    """Body, lungs and spine masks of the synthetic thorax cross-section (2-D, rows=y, cols=x)."""
    X, Y = np.meshgrid(x, y)  # [row(y), col(x)]
    body = (X / 150.0) ** 2 + (Y / 105.0) ** 2 <= 1.0
    lungs = (((X + 65.0) / 45.0) ** 2 + (Y / 62.0) ** 2 <= 1.0) | (((X - 65.0) / 45.0) ** 2 + (Y / 62.0) ** 2 <= 1.0)
    spine = (X / 16.0) ** 2 + ((Y - 75.0) / 16.0) ** 2 <= 1.0
    return body, lungs, spine


def ct_volume(
    lesion: Lesion, centre: Centre, rng: np.random.Generator, n_xy: int = 96, z_extent_mm: float = 120.0
) -> tuple[np.ndarray, float, np.ndarray]:
    """CT volume in HU ``[z, y, x]`` (float32), its pixel-grid origin (x = y, mm) and slice positions (mm)."""
    t = centre.slice_thickness_mm
    nz = int(round(z_extent_mm / t))
    z_positions = -(nz - 1) / 2.0 * t + t * np.arange(nz)
    xs, ys, zs, origin = _coords(n_xy, centre.pixel_spacing_mm, z_positions)
    body, lungs, spine = body_masks(xs, ys)
    slice2d = np.full((n_xy, n_xy), -1000.0)
    slice2d[body] = 40.0
    slice2d[lungs] = -820.0
    slice2d[spine] = 450.0
    vol = np.broadcast_to(slice2d, (nz, n_xy, n_xy)).astype(np.float64)
    vol = vol + 6.0 * _smooth_field(rng, vol.shape, (1.0, 2.0, 2.0)) * body[None]
    # lesion: partial volume at the edge, heterogeneous interior
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    occ = _occupancy(lesion_norm_radius(lesion, X, Y, Z), lesion.radius_mm, edge_mm=1.5)
    texture = lesion.ct_texture_sd_hu * _smooth_field(rng, vol.shape, (0.6, 1.0, 1.0))
    vol = vol * (1.0 - occ) + occ * (lesion.ct_mean_hu + texture)
    # scanner: noise, reconstruction kernel, calibration offset
    vol = vol + centre.ct_noise_hu * rng.standard_normal(vol.shape)
    if centre.ct_kernel_sigma > 0:
        vol = ndimage.gaussian_filter(vol, (0.0, centre.ct_kernel_sigma, centre.ct_kernel_sigma))
    vol = vol + centre.ct_offset_hu
    return vol.astype(np.float32), origin, z_positions


def pet_suv_volume(
    lesion: Lesion, centre: Centre, rng: np.random.Generator, n_xy: int = 48, z_extent_mm: float = 120.0
) -> tuple[np.ndarray, float, np.ndarray]:
    """PET volume in SUVbw ``[z, y, x]`` (float32, before conversion to Bq/mL), origin and slice positions."""
    t = centre.pet_slice_mm
    nz = int(round(z_extent_mm / t))
    z_positions = -(nz - 1) / 2.0 * t + t * np.arange(nz)
    spacing = 2.0 * centre.pixel_spacing_mm
    xs, ys, zs, origin = _coords(n_xy, spacing, z_positions)
    body, lungs, spine = body_masks(xs, ys)
    slice2d = np.zeros((n_xy, n_xy))
    slice2d[body] = 1.0
    slice2d[lungs] = 0.35
    slice2d[spine] = 1.6
    vol = np.broadcast_to(slice2d, (nz, n_xy, n_xy)).astype(np.float64)
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    occ = _occupancy(lesion_norm_radius(lesion, X, Y, Z), lesion.radius_mm, edge_mm=3.0)
    hetero = 1.0 + 0.12 * _smooth_field(rng, vol.shape, (0.7, 0.7, 0.7))
    vol = vol * (1.0 - occ) + occ * lesion.suv_peak * hetero
    vol = ndimage.gaussian_filter(vol, (0.6, 0.8, 0.8))  # scanner resolution
    vol = vol * (1.0 + 0.08 * rng.standard_normal(vol.shape))  # count noise
    vol = np.clip(vol, 0.0, None) * centre.pet_scale
    return vol.astype(np.float32), origin, z_positions
