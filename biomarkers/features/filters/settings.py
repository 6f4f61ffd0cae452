"""Typed settings of the IBSI 2 filters (the ``ibsi: filters:`` entries of a parameter file).

One model per filter family; every model has ``boundary`` (IBSI padding: ``constant`` = zero,
``nearest``, ``periodic``, ``mirror`` = symmetric, ``d c b a | a b c d | d c b a``) and
``dimensions`` (``3D``: volumetric; ``2D``: slice by slice in the axial plane, i.e. along the
array axes (y, x) of a (z, y, x) array). Sizes given in mm (``sigma_mm``, ``lambda_mm``) are
converted with the image spacing; sizes of discrete kernels are in voxels (``support``, ``delta``).

Axis letters of Laws kernels and wavelet sub-bands follow IBSI: the first letter filters
along x, the second along y, the third along z (``E5L5S5``: E5 along x, L5 along y, S5 along z;
``LHL``: low-pass along x, high-pass along y, low-pass along z). Riesz orders are (x, y, z).

Parameter-file entry (see :class:`FilterEntry`)::

    ibsi:
      filters:
        - id: log_1.5
          filter: log
          settings: {sigma_mm: 1.5, truncation: 4, boundary: mirror, dimensions: 3D}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from biomarkers.config import Settings, validate

Boundary = Literal["constant", "nearest", "periodic", "mirror"]
Dimensions = Literal["2D", "3D"]
Pooling = Literal["max", "mean", "min"]

#: IBSI 1D Laws kernels (unnormalised integer taps; normalised to unit L2 norm when used)
LAWS_1D = {
    "L3": (1, 2, 1), "E3": (-1, 0, 1), "S3": (-1, 2, -1),
    "L5": (1, 4, 6, 4, 1), "E5": (-1, -2, 0, 2, 1), "S5": (-1, 0, 2, 0, -1),
    "W5": (-1, 2, 0, -2, 1), "R5": (1, -4, 6, -4, 1),
}


class _Common(Settings):
    boundary: Boundary = Field("mirror", description="padding at the image border")
    dimensions: Dimensions = Field("3D", description="3D, or 2D slice by slice (axial)")

    @property
    def ndim(self) -> int:
        return 2 if self.dimensions == "2D" else 3


class NoFilter(_Common):
    """The unfiltered image (IBSI 2 phase 2 filter set 1)."""

    filter: Literal["none"] = "none"


class MeanFilter(_Common):
    """Mean over a cube (3D) or square (2D) of ``support`` voxels per side (IBSI 2, S60F)."""

    filter: Literal["mean"] = "mean"
    support: int = Field(..., ge=1, description="filter support M in voxels (odd)")

    @field_validator("support")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError("support must be odd (the kernel is centred on the voxel)")
        return v


class _Riesz(_Common):
    riesz: tuple[int, int, int] | None = Field(
        None, description="optional Riesz transform order (x, y, z) of the response (no IBSI consensus)")

    @field_validator("riesz")
    @classmethod
    def _order(cls, v):
        if v is not None and (min(v) < 0 or sum(v) == 0):
            raise ValueError("riesz order: non-negative integers (x, y, z), at least one > 0")
        return v


class LoGFilter(_Riesz):
    """Laplacian of Gaussian (IBSI 2, L6PA): ``sigma_mm``, kernel radius ``ceil(truncation * sigma)`` voxels."""

    filter: Literal["log"] = "log"
    sigma_mm: float = Field(..., gt=0, description="Gaussian standard deviation in mm")
    truncation: float = Field(4.0, gt=0, description="kernel radius in units of sigma")


class LawsFilter(_Common):
    """Laws kernel by name (IBSI 2, JTXT), optional rotation invariance and energy map."""

    filter: Literal["laws"] = "laws"
    kernel: str = Field(..., description="e.g. L5E5 (2D) or E5L5S5 (3D): one 1D kernel per axis, x first")
    rotation_invariant: bool = False
    pooling: Pooling = "max"
    energy: bool = Field(False, description="energy map: mean of |response| over (2 delta + 1) voxels per axis")
    delta: int = Field(7, ge=0, description="energy map half-width in voxels")

    @model_validator(mode="after")
    def _kernel(self):
        parts = re.findall(r"[A-Z]\d", self.kernel.upper())
        if "".join(parts) != self.kernel.upper() or any(p not in LAWS_1D for p in parts):
            raise ValueError(f"kernel {self.kernel!r}: expected 1D Laws kernels from {sorted(LAWS_1D)}")
        if len(parts) != self.ndim:
            raise ValueError(f"kernel {self.kernel!r} has {len(parts)} 1D kernels; {self.dimensions} needs {self.ndim}")
        return self

    @property
    def kernels_1d(self) -> list[str]:
        return re.findall(r"[A-Z]\d", self.kernel.upper())


class GaborFilter(_Common):
    """Gabor filter (IBSI 2, Q88H) in a plane; modulus, real or imaginary response.

    ``rotation_invariant`` pools over theta = 0, step, 2 step, ... < 360 deg (``theta_deg`` is then
    ignored). In 3D the 2D filter is applied in the axial plane, or, with
    ``orthogonal_planes`` (default: on when rotation invariant), in the axial, coronal and
    sagittal planes, pooled by ``pooling``.
    """

    filter: Literal["gabor"] = "gabor"
    sigma_mm: float = Field(..., gt=0)
    lambda_mm: float = Field(..., gt=0, description="wavelength in mm")
    gamma: float = Field(..., gt=0, description="spatial aspect ratio")
    theta_deg: float = Field(0.0, description="orientation in degrees (counter-clockwise from x)")
    rotation_invariant: bool = False
    theta_step_deg: float | None = Field(None, gt=0, le=180, description="theta step of the pooling")
    pooling: Pooling = "mean"
    orthogonal_planes: bool | None = None
    response: Literal["modulus", "real", "imaginary"] = "modulus"
    truncation: float = Field(4.0, gt=0, description="kernel radius: truncation * sigma * max(1, 1/gamma)")

    @model_validator(mode="after")
    def _step(self):
        if self.rotation_invariant and self.theta_step_deg is None:
            raise ValueError("rotation_invariant Gabor needs theta_step_deg")
        return self

    @property
    def planes3d(self) -> bool:
        if self.dimensions == "2D":
            return False
        return self.rotation_invariant if self.orthogonal_planes is None else self.orthogonal_planes


class WaveletFilter(_Common):
    """Undecimated separable wavelet (IBSI 2, 25BO), PyWavelets names (haar, db2, db3, coif1, ...)."""

    filter: Literal["wavelet"] = "wavelet"
    wavelet: str = Field(..., description="PyWavelets discrete wavelet name")
    subband: str = Field(..., description="L/H per axis, x first: LHL (3D), LH (2D)")
    level: int = Field(1, ge=1, le=6, description="decomposition level (a trous)")
    rotation_invariant: bool = False
    pooling: Pooling = "mean"

    @model_validator(mode="after")
    def _check(self):
        import pywt

        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"wavelet {self.wavelet!r}: not a PyWavelets discrete wavelet (e.g. haar, db2, coif1)")
        sb = self.subband.upper()
        if len(sb) != self.ndim or set(sb) - {"L", "H"}:
            raise ValueError(f"subband {self.subband!r}: {self.ndim} letters L/H needed for {self.dimensions}")
        return self


class SimoncelliFilter(_Riesz):
    """Simoncelli non-separable isotropic wavelet (IBSI 2, PRT7), band of decomposition ``level``."""

    filter: Literal["simoncelli"] = "simoncelli"
    level: int = Field(1, ge=1, le=6)


FilterSettings = Annotated[
    Union[NoFilter, MeanFilter, LoGFilter, LawsFilter, GaborFilter, WaveletFilter, SimoncelliFilter],
    Field(discriminator="filter"),
]
FILTERS = ("none", "mean", "log", "laws", "gabor", "wavelet", "simoncelli")
_MODELS = {m.model_fields["filter"].default: m for m in
           (NoFilter, MeanFilter, LoGFilter, LawsFilter, GaborFilter, WaveletFilter, SimoncelliFilter)}


#: IBSI 1 families defined on a response map (morphology, local intensity, IVH and diagnostics
#: describe the ROI or need calibrated intensities: refused for filters)
RESPONSE_FAMILIES = ("stat", "ih", "cm", "rlm", "szm", "dzm", "ngt", "ngl")


class Discretisation(Settings):
    """Grey levels of a response map for the texture / histogram families (IBSI 1 fbn or fbs)."""

    method: Literal["fbn", "fbs"] = "fbn"
    bin_count: int | None = Field(32, gt=0)
    bin_width: float | None = Field(None, gt=0, description="in response-map units")

    @model_validator(mode="after")
    def _check(self):
        if self.method == "fbs" and self.bin_width is None:
            raise ValueError("method fbs needs bin_width")
        if self.method == "fbn" and self.bin_count is None:
            raise ValueError("method fbn needs bin_count")
        return self


class FilterEntry(Settings):
    """One entry of ``ibsi: filters:``.

    ``id`` names the response map: the value of the ``filter`` key column and the rows'
    ``image_type`` (so no ``_``, and not ``original``); ``filter`` and ``settings`` (the filter's
    model, e.g. :class:`LoGFilter`); ``families``: IBSI 1 families of the response map inside the
    ROI (default the intensity statistics); ``discretisation`` for the other families.
    """

    id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9.\-]+$")
    filter: Literal["none", "mean", "log", "laws", "gabor", "wavelet", "simoncelli"]
    settings: dict[str, Any] = Field(default_factory=dict)
    families: tuple[str, ...] = ("stat",)
    discretisation: Discretisation = Discretisation()

    @property
    def spec(self):
        """The typed settings (validated when the entry is)."""
        return _MODELS[self.filter].model_validate(self.settings)

    @model_validator(mode="after")
    def _settings(self):
        if self.id == "original":
            raise ValueError("id 'original' is the unfiltered image of pyradiomics and IBSI 1; choose another")
        bad = [f for f in self.families if f not in RESPONSE_FAMILIES]
        if bad:
            raise ValueError(f"families {bad} are not defined on a response map; use {list(RESPONSE_FAMILIES)}")
        self.spec  # raises a ValidationError naming the bad key
        return self


def filter_spec(filter: str, settings: dict | None = None, source: str = "filter"):
    """Typed settings of one filter, validated (ConfigError naming ``source`` and key)."""
    if filter not in _MODELS:
        from biomarkers.errors import ConfigError

        raise ConfigError(f"{source}: unknown filter {filter!r}; known: {', '.join(FILTERS)}")
    return validate(_MODELS[filter], dict(settings or {}), source=source)


def filter_entries(items: list | None, source: str = "ibsi.filters") -> list[FilterEntry]:
    """Validate an ``ibsi: filters:`` list; ids must be unique."""
    from biomarkers.errors import ConfigError

    out = [validate(FilterEntry, it, source=f"{source}[{i}]") for i, it in enumerate(items or [])]
    ids = [e.id for e in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{source}: duplicate filter id(s) {dup}; each id names one response map")
    return out
