"""``QcSettings``: the ``qc:`` section of a pipeline config (and the options of ``biomarkers qc``)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from ..config import Settings

#: Features whose distributions the cohort view shows by default (wide-table column names).
DEFAULT_FEATURES = ("original_firstorder_Entropy", "original_glcm_Contrast", "original_shape_Sphericity")


class QcSettings(Settings):
    """Visual quality control (``OUT/qc/index.html``); display conventions in :mod:`biomarkers.qc.display`."""

    #: Build the report in ``biomarkers run`` (stage ``qc``).
    enabled: bool = True
    #: Longest side of a thumbnail, in pixels (the field of view of the slice is shown edge to edge).
    size: int = Field(192, ge=64, le=1024)
    #: CT window: ``soft_tissue`` (L 40 / W 400 HU), ``lung`` (-600 / 1500), ``bone`` (400 / 1800) or [level, width].
    ct_window: Union[Literal["soft_tissue", "lung", "bone"], tuple[float, float]] = "soft_tissue"
    #: PET window upper bound (SUV); default: the 99.5th percentile of the volume's positive voxels. Lower bound 0.
    pet_max: float | None = Field(None, gt=0)
    #: MR (and other modalities) window between these percentiles of the foreground voxels.
    mr_percentiles: tuple[float, float] = (1.0, 99.0)
    #: Wide-table feature columns whose distributions per centre and scanner are shown (missing ones are ignored).
    features: list[str] = Field(default_factory=lambda: list(DEFAULT_FEATURES))
    #: A value is an outlier when its robust z-score within its centre (and modality) is above this.
    outlier_z: float = Field(3.0, gt=0)
    #: Base URL of the MLflow UI the report links to (``mlflow ui`` serves on this address by default).
    mlflow_ui: str = "http://127.0.0.1:5000"
    #: Significance level of the centre-effect panel (Kruskal-Wallis across centres).
    alpha: float = Field(0.01, gt=0, lt=1)

    def render_settings(self) -> dict:
        """The settings that change the pictures (part of every thumbnail's cache key)."""
        ct = self.ct_window if isinstance(self.ct_window, str) else list(self.ct_window)
        return {"size": self.size, "ct_window": ct, "pet_max": self.pet_max, "mr_percentiles": list(self.mr_percentiles)}
