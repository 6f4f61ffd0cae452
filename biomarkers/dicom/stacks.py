"""Group indexed image frames into series and geometrically consistent stacks."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .model import DicomFile, ImageStack


def _orientation_key(iop) -> tuple:
    if iop is None:
        return ("none",)
    return tuple(round(float(x), 4) for x in iop)


def is_localizer(f: DicomFile) -> bool:
    return "LOCALIZER" in f.image_type


def build_stacks(files: list[DicomFile]) -> list[ImageStack]:
    """Group image frames into patient/study/series, then split each series into stacks.

    Split keys: orientation (rounded to 1e-4), rows x columns, pixel spacing, localizer
    image type; then acquisition number when positions repeat inside a group. Stacks
    of a series are ordered by decreasing slice count: the largest has key ``<series>``,
    further ones ``<series>#2``, ``#3``...
    """
    by_series: dict[tuple, list[DicomFile]] = defaultdict(list)
    for f in files:
        by_series[(f.patient_id, f.study_uid, f.series_uid)].append(f)
    stacks: list[ImageStack] = []
    for (pid, study, series), fs in sorted(by_series.items()):
        groups: dict[tuple, list[DicomFile]] = defaultdict(list)
        for f in fs:
            k = (
                _orientation_key(f.image_orientation),
                f.rows,
                f.columns,
                tuple(round(x, 4) for x in f.pixel_spacing) if f.pixel_spacing else None,
                is_localizer(f),
            )
            groups[k].append(f)
        parts: list[list[DicomFile]] = []
        for g in groups.values():
            parts.extend(_split_acquisitions(g))
        parts.sort(key=lambda p: (-len(p), p[0].instance_number or 0, p[0].rel))
        for n, part in enumerate(parts, start=1):
            first = part[0]
            key = series if n == 1 else f"{series}#{n}"
            stacks.append(ImageStack(key, pid, study, series, first.modality, first.frame_of_reference_uid,
                                     sort_along_normal(part)))
    return stacks


def _positions_along_normal(fs: list[DicomFile]) -> np.ndarray | None:
    iop = fs[0].image_orientation
    if iop is None or any(f.image_position is None for f in fs):
        return None
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    return np.asarray([f.image_position for f in fs], dtype=float) @ normal


def _split_acquisitions(fs: list[DicomFile]) -> list[list[DicomFile]]:
    d = _positions_along_normal(fs)
    if d is None or len(fs) < 2:
        return [fs]
    if len(np.unique(np.round(d, 3))) == len(d):
        return [fs]
    for attr in ("acquisition_number", "echo_number"):
        vals = {getattr(f, attr) for f in fs}
        if len(vals) > 1:
            out: dict = defaultdict(list)
            for f in fs:
                out[getattr(f, attr)].append(f)
            return list(out.values())
    return [fs]


def sort_along_normal(fs: list[DicomFile]) -> list[DicomFile]:
    """Sort frames by position along the slice normal (then instance number, path)."""
    d = _positions_along_normal(fs)
    if d is None:
        return sorted(fs, key=lambda f: (f.instance_number or 0, f.rel))
    order = sorted(range(len(fs)), key=lambda i: (round(float(d[i]), 4), fs[i].instance_number or 0, fs[i].rel))
    return [fs[i] for i in order]
