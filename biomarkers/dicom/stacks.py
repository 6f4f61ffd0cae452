"""Group indexed image frames into series and stacks (3-D, or 4-D along time or diffusion)."""

from __future__ import annotations

import functools
from collections import defaultdict

from ..manifest import Status
from .dims import VolumeError, along_normal, assemble_volumes
from .model import DicomFile, ImageStack


@functools.lru_cache(maxsize=4096)
def _orientation_key(iop) -> tuple:
    """Direction cosines rounded to 1e-4 (cached: the frames of a series repeat them)."""
    if iop is None:
        return ("none",)
    return tuple(round(float(x), 4) for x in iop)


@functools.lru_cache(maxsize=4096)
def _spacing_key(spacing) -> tuple | None:
    return tuple(round(x, 4) for x in spacing) if spacing else None


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def is_localizer(f: DicomFile) -> bool:
    return "LOCALIZER" in f.image_type


#: Output name part of each complex image type (dcm2niix's ``_ph``, ``_real``, ``_imaginary``).
COMPLEX_LABELS = {"phase": "ph", "real": "real", "imaginary": "imaginary"}


def build_stacks(files: list[DicomFile], position_tolerance_mm: float = 0.01) -> list[ImageStack]:
    """Group image frames into patient/study/series, then split each series into stacks.

    Split keys: SeriesNumber, echo (EchoNumbers), complex image type (magnitude / phase /
    real / imaginary), ImageType's first two values (ORIGINAL/DERIVED, PRIMARY/SECONDARY),
    orientation (rounded to 1e-4), rows x columns, pixel spacing, localizer image type.
    Each part is then ordered into volumes (:func:`biomarkers.dicom.dims.assemble_volumes`:
    one 3-D volume, or 4-D along time or diffusion); a part whose repeated positions no
    dimension explains is split by AcquisitionNumber when its acquisitions cover different
    positions, else it becomes a skipped stack whose reason names the repeated positions.

    Names: echoes after the series' first get the label ``e<EchoNumbers>`` (``e<n>``: the n-th
    EchoTime when EchoNumbers do not tell the echo times apart), phase / real /
    imaginary images ``ph`` / ``real`` / ``imaginary``; stacks with the same label are ordered by
    SeriesNumber, then decreasing frame count (then the InstanceNumber and path of their first
    indexed frame): the first has key ``<series>`` (or
    ``<series>#<label>``), further ones ``#2``, ``#3``... (``#<label>_2``...).
    """
    by_series: dict[tuple, list[DicomFile]] = defaultdict(list)
    for f in files:
        by_series[(f.patient_id, f.study_uid, f.series_uid)].append(f)
    stacks: list[ImageStack] = []
    for (pid, study, series), fs in sorted(by_series.items()):
        groups: dict[tuple, list[DicomFile]] = defaultdict(list)
        echo_of = _echo_index(fs)
        for f in fs:
            k = (
                f.series_number, echo_of(f), f.complex_part, f.image_type[:2],
                _orientation_key(_hashable(f.image_orientation)),
                f.rows,
                f.columns,
                _spacing_key(_hashable(f.pixel_spacing)),
                is_localizer(f),
            )
            groups[k].append(f)
        echoes = sorted({e for e in map(echo_of, fs) if e is not None})
        parts: list[tuple[tuple[str, ...], ImageStack, DicomFile]] = []  # label, stack, its first indexed frame
        for g in groups.values():
            first, echo = g[0], echo_of(g[0])
            label = tuple(x for x in (
                f"e{echo}" if len(echoes) > 1 and echo not in (None, echoes[0]) else "",
                COMPLEX_LABELS.get(first.complex_part, ""),
            ) if x)
            parts.extend((label, st, f0) for st, f0 in _assemble(g, pid, study, series, position_tolerance_mm))
        sn = lambda st: (st.files[0].series_number is None, st.files[0].series_number or 0)  # noqa: E731
        parts.sort(key=lambda p: (p[0], sn(p[1]), -len(p[1].all_files), p[2].instance_number or 0, p[2].rel))
        count: dict[tuple, int] = defaultdict(int)
        for label, st, _ in parts:
            count[label] += 1
            n = count[label]
            name = "_".join(label + ((str(n),) if n > 1 else ()))
            st.key, st.label, st.part = (f"{series}#{name}" if name else series), label, n
            stacks.append(st)
    return stacks


def _echo_index(fs: list[DicomFile]):
    """The echo of a frame: EchoNumbers, unless they do not tell the series' echo times apart
    (enhanced frames, some exports): then the rank (1, 2...) of its EchoTime in the series."""
    def te(f: DicomFile):
        return None if f.echo_time is None else round(f.echo_time, 3)

    times = sorted({t for t in map(te, fs) if t is not None})
    per_number: dict = defaultdict(set)
    for f in fs:
        per_number[f.echo_number].add(te(f))
    if len(times) > 1 and any(len(v) > 1 for v in per_number.values()):
        rank = {t: n for n, t in enumerate(times, start=1)}
        return lambda f: rank.get(te(f), f.echo_number)
    return lambda f: f.echo_number


def _assemble(fs: list[DicomFile], pid: str, study: str, series: str, tol: float) -> list[tuple[ImageStack, DicomFile]]:
    """One frame group (index order) -> its stacks, each with its first frame in index order (keys
    set by the caller)."""
    first = fs[0]

    def stack(files: list[DicomFile]) -> tuple[ImageStack, DicomFile]:
        return ImageStack(series, pid, study, series, first.modality, first.frame_of_reference_uid, files), first

    try:
        vols = assemble_volumes(fs, tol)
    except VolumeError as err:
        acqs = _by(fs, "acquisition_number")
        if len(acqs) > 1 and _distinct_coverage(acqs):  # separate acquisitions (e.g. overlapping CT ranges)
            out = [p for a in acqs for p in _assemble(a, pid, study, series, tol)]
            if all(st.status != Status.SKIPPED for st, _ in out):
                return out
        st, f0 = stack(sort_along_normal(fs))
        st.status, st.reason = Status.SKIPPED, str(err)
        return [(st, f0)]
    if len(vols.volumes) == 1:
        return [stack(sort_along_normal(fs))]
    st, f0 = stack(vols.volumes[0])
    st.volumes, st.dimension, st.ordered_by = vols.volumes, vols.dimension, vols.ordered_by
    if vols.removed_isotropic:
        st.qc["removed_isotropic_volumes"] = vols.removed_isotropic
    return [(st, f0)]


def _distinct_coverage(groups: list[list[DicomFile]]) -> bool:
    """No two groups cover exactly the same set of slice positions (0.01 mm; overlapping ranges are
    allowed): separate acquisitions, not the volumes of one series with some frames missing."""
    cover = set()
    for g in groups:
        d = along_normal(g)
        cover.add(frozenset(round(float(x), 2) for x in (d if d is not None else ())))
    return len(cover) == len(groups)


def _by(fs: list[DicomFile], attr: str) -> list[list[DicomFile]]:
    out: dict = defaultdict(list)
    for f in fs:
        out[getattr(f, attr)].append(f)
    return list(out.values())


def sort_along_normal(fs: list[DicomFile]) -> list[DicomFile]:
    """Sort frames by position along the slice normal (then instance number, path)."""
    d = along_normal(fs)
    if d is None:
        return sorted(fs, key=lambda f: (f.instance_number or 0, f.rel))
    order = sorted(range(len(fs)), key=lambda i: (round(float(d[i]), 4), fs[i].instance_number or 0, fs[i].rel))
    return [fs[i] for i in order]
