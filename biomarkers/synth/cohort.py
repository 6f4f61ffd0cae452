"""The synthetic multicentre cohort: DICOM per patient, a clinical CSV per centre, ground truth.

Layout of ``OUT``::

    OUT/dicom/<centre>/<patient_id>/CT/CT_0001.dcm ...      CT Image Storage, int16 + rescale (HU)
    OUT/dicom/<centre>/<patient_id>/PT/PT_0001.dcm ...      PET Image Storage, Bq/mL (Units BQML)
    OUT/dicom/<centre>/<patient_id>/RS_CT/RS.dcm            RT Structure Set on the CT
    OUT/dicom/<centre>/<patient_id>/RS_PT/RS.dcm            RT Structure Set on the PET
    OUT/clinical/<centre>.csv                               one CSV per centre (own columns and codings)
    OUT/ground_truth.csv                                    hidden outcome, lesion and scanner parameters
    OUT/synth.json                                          generator parameters and planted quirks

Patient ``g`` (0-based) goes to centre ``g % centres + 1`` and gets the number
``g // centres + 1`` there; every patient's data depends only on (seed, centre,
number), so synthesising more patients with the same seed keeps the earlier
patients byte-identical (this is how "added patients" are simulated).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..io import write_json, write_text
from .dicom import PatientInfo, write_ct_series, write_pet_series, write_rtstruct
from .phantom import centre_profile, ct_volume, pet_suv_volume, sample_lesion

GENERATOR_VERSION = "2"

_GIVEN_M = ["JOHN", "PETER", "HANS", "LUCA", "PIERRE", "JAN", "MARCO", "DAVID", "THOMAS", "KARL", "ERIK", "PAUL"]
_GIVEN_F = ["JANE", "MARIA", "ANNA", "SOPHIE", "CLAIRE", "EVA", "LAURA", "JULIA", "ELENA", "SARA", "INGRID", "LEA"]
_SURNAMES = ["DOE", "SMITH", "MUELLER", "ROSSI", "MARTIN", "JANSSEN", "GARCIA", "NOVAK", "BERG", "DUBOIS",
             "SCHMIDT", "BIANCHI", "DE VRIES", "KOWALSKI", "LARSEN", "FISCHER", "MOREAU", "WEBER"]
_STAGES = ["I", "II", "III", "IV"]
_SMOKING = ["never", "former", "current"]


@dataclass(frozen=True)
class SynthPatient:
    """Everything drawn for one patient (the ground truth)."""

    patient_id: str
    centre: str
    number: int
    outcome: int
    name: str
    birth_date: str
    sex: str
    age: int
    weight_kg: float
    smoking: str
    stage: str
    dose_bq: float
    uptake_min: float
    lesion_x_mm: float
    lesion_y_mm: float
    lesion_z_mm: float
    lesion_radius_mm: float
    lesion_volume_ml: float
    lesion_ct_mean_hu: float
    lesion_texture_sd_hu: float
    lesion_suv: float


def _patient(seed: int, centre: int, number: int):
    rng = np.random.default_rng([seed, centre, number])
    outcome = int(rng.random() < 0.5)
    sex = "M" if rng.random() < 0.55 else "F"
    given = rng.choice(_GIVEN_M if sex == "M" else _GIVEN_F)
    name = f"{rng.choice(_SURNAMES)}^{given}"
    study_date = dt.date(2014, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    age = int(np.clip(rng.normal(64, 9), 35, 88))
    birth = study_date - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    weight = float(np.round(np.clip(rng.normal(78 if sex == "M" else 66, 12), 42, 140), 1))
    # clinical covariates, mildly associated with the outcome
    stage = _STAGES[int(np.clip(rng.normal(1.2 + 1.0 * outcome, 0.9), 0, 3).round())]
    smoking = _SMOKING[int(rng.choice(3, p=[0.3, 0.4, 0.3]))]
    lesion = sample_lesion(rng, outcome)
    dose = float(round(3.5e6 * weight, -5))  # 3.5 MBq/kg
    uptake = float(rng.uniform(55, 75))
    pid = f"C{centre}-{number:04d}"
    info = PatientInfo(pid, name, birth, sex, weight, study_date, f"ACC{centre}{number:06d}", seed)
    sp = SynthPatient(
        patient_id=pid, centre=f"C{centre}", number=number, outcome=outcome, name=name,
        birth_date=birth.isoformat(), sex=sex, age=age, weight_kg=weight, smoking=smoking, stage=stage,
        dose_bq=dose, uptake_min=round(uptake, 3),
        lesion_x_mm=round(lesion.centre_lps[0], 3), lesion_y_mm=round(lesion.centre_lps[1], 3),
        lesion_z_mm=round(lesion.centre_lps[2], 3), lesion_radius_mm=round(lesion.radius_mm, 4),
        lesion_volume_ml=round(lesion.volume_ml, 4), lesion_ct_mean_hu=round(lesion.ct_mean_hu, 3),
        lesion_texture_sd_hu=round(lesion.ct_texture_sd_hu, 3), lesion_suv=round(lesion.suv_peak, 4),
    )
    return sp, info, lesion, rng


def synth_patient(payload: dict) -> dict:
    """Write one patient's DICOM (top-level so executors can run it). Returns the ground-truth row."""
    seed, centre, number, root = payload["seed"], payload["centre"], payload["number"], Path(payload["root"])
    sp, info, lesion, rng = _patient(seed, centre, number)
    prof = centre_profile(centre)
    pdir = root / "dicom" / prof.code / sp.patient_id
    marker = root / ".synth" / f"{sp.patient_id}.done"
    scale = float(payload.get("scale", 1.0))
    if scale != 1.0:  # finer in-plane grid over the same field of view
        prof = replace(prof, pixel_spacing_mm=prof.pixel_spacing_mm / scale)
    if not marker.exists():
        hu, origin, zs = ct_volume(lesion, prof, rng, n_xy=round(payload["ct_size"] * scale))
        ct_uid, ct_refs = write_ct_series(pdir / "CT", info, prof, hu, origin, zs)
        write_rtstruct(pdir / "RS_CT" / "RS.dcm", info, prof, lesion, ct_uid, ct_refs, "CT")
        if payload["pet"]:
            suv, porigin, pzs = pet_suv_volume(lesion, prof, rng, n_xy=round(payload["pet_size"] * scale))
            pt_uid, pt_refs = write_pet_series(pdir / "PT", info, prof, suv, porigin, pzs, sp.dose_bq, sp.uptake_min)
            write_rtstruct(pdir / "RS_PT" / "RS.dcm", info, prof, lesion, pt_uid, pt_refs, "PT")
        write_text(marker, GENERATOR_VERSION + "\n")
    return asdict(sp)


# ----------------------------------------------------------------------------- clinical CSVs
def _fmt_stage(stage: str, style: int) -> str:
    n = _STAGES.index(stage) + 1
    return {0: stage, 1: str(n), 2: f"Stage {stage}"}[style]


def clinical_rows(patients: list[dict], centre: int, seed: int) -> tuple[list[str], list[list[str]], list[dict]]:
    """Header, rows and the list of planted quirks of one centre's clinical CSV.

    Style by centre template ((centre-1) % 3):
      0: ``patient_id,age,sex,smoking,stage,outcome`` (M/F, never/former/current, I..IV, 0/1, blank = missing)
      1: ``PatientID,Age_at_Dx,Gender,Smoker,TNM_Stage,Response`` (1=male 2=female, Y/N, 1..4,
         responder/non-responder, ``NA`` = missing)
      2: ``MRN,DOB,Age (years),Sex,Smoking status,Stage,Event`` (DOB dd/mm/yyyy, male/female,
         Never/Ex/Current smoker, "Stage III", TRUE/FALSE, ``-999`` = missing)
    """
    style = (centre - 1) % 3
    rng = np.random.default_rng([seed, centre, 999])
    quirks: list[dict] = []
    if style == 0:
        header = ["patient_id", "age", "sex", "smoking", "stage", "outcome"]
        missing = ""
    elif style == 1:
        header = ["PatientID", "Age_at_Dx", "Gender", "Smoker", "TNM_Stage", "Response"]
        missing = "NA"
    else:
        header = ["MRN", "DOB", "Age (years)", "Sex", "Smoking status", "Stage", "Event"]
        missing = "-999"

    def render(p: dict) -> list[str]:
        smoking = p["smoking"] if rng.random() > 0.1 else None
        stage = p["stage"] if rng.random() > 0.08 else None
        if style == 0:
            return [p["patient_id"], str(p["age"]), p["sex"], smoking or missing,
                    _fmt_stage(stage, 0) if stage else missing, str(p["outcome"])]
        if style == 1:
            smoker = {"never": "N", "former": "Y", "current": "Y"}[smoking] if smoking else missing
            return [p["patient_id"].lower(), str(p["age"]), "1" if p["sex"] == "M" else "2", smoker,
                    _fmt_stage(stage, 1) if stage else missing, "responder" if p["outcome"] else "non-responder"]
        dob = dt.date.fromisoformat(p["birth_date"]).strftime("%d/%m/%Y")
        sm = {"never": "Never smoker", "former": "Ex-smoker", "current": "Current smoker"}[smoking] if smoking else missing
        return [p["patient_id"], dob, str(p["age"]), "male" if p["sex"] == "M" else "female", sm,
                _fmt_stage(stage, 2) if stage else missing, "TRUE" if p["outcome"] else "FALSE"]

    rows = [render(p) for p in patients]
    age_col = 1 if style < 2 else 2
    # quirk: an impossible age for one real patient (the row stays, the value is invalid)
    if len(rows) >= 3:
        i = int(rng.integers(0, len(rows)))
        rows[i][age_col] = "999" if style != 1 else "-4"
        quirks.append({"centre": f"C{centre}", "patient_id": patients[i]["patient_id"], "quirk": "invalid_age",
                       "value": rows[i][age_col]})
    # quirk: a row for a patient who has no imaging
    ghost = [f"C{centre}-9{int(rng.integers(100, 999))}"] + rows[0][1:] if rows else None
    if ghost:
        rows.append(ghost)
        quirks.append({"centre": f"C{centre}", "patient_id": ghost[0], "quirk": "no_imaging"})
    # quirk: a row without a patient id
    if rows:
        rows.append([""] + rows[0][1:])
        quirks.append({"centre": f"C{centre}", "patient_id": "", "quirk": "missing_patient_id"})
    return header, rows, quirks


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- entry point
def synthesize(
    out: str | Path,
    patients: int = 60,
    centres: int = 3,
    seed: int = 0,
    *,
    ct_size: int = 96,
    pet_size: int = 48,
    pet: bool = True,
    scale: float = 1.0,
    executor=None,
) -> dict:
    """Write a synthetic cohort to ``out`` (see module docstring). Returns a summary dict.

    Args:
        out: output folder (created; existing patients of the same seed are kept as they are).
        patients: number of patients in total, spread round-robin over the centres.
        centres: number of centres (scanner profiles and clinical CSV styles cycle every 3).
        seed: random seed; the same (seed, patients, centres) always gives identical files.
        ct_size / pet_size: in-plane matrix of the CT / PET images (pixels; at least 64 / 32 so that the
            lesion, 60-70 mm right of the midline, lies in the field of view).
        pet: also write the PET series and its RTSTRUCT.
        scale: in-plane resolution factor at a fixed field of view: matrices ``ct_size * scale``
            and ``pet_size * scale``, pixel spacings divided by ``scale`` (1 = the demo's coarse
            3.4-3.6 mm CT pixels; 4 gives clinical 0.85-0.9 mm CT pixels). For load generation
            (benchmarks): lesions get ``scale**2`` times more voxels; the noise and texture
            fields keep their correlation length in pixels, so features differ from scale 1.
        executor: optional :mod:`biomarkers.executors` spec or Executor to write patients in parallel.
    """
    from ..errors import ConfigError
    from ..executors import Executor, get_executor

    if patients < 1 or centres < 1:
        raise ConfigError(f"synth: --patients and --centres must be >= 1 (got {patients}, {centres})")
    if not 0.5 <= scale <= 8:
        raise ConfigError(f"synth: scale must be between 0.5 and 8 (got {scale})")
    if ct_size < 64 or pet_size < 32:
        raise ConfigError(f"synth: ct_size >= 64 and pet_size >= 32 are needed for the lesion to lie in the field of "
                          f"view (got {ct_size}, {pet_size})")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    from ..deid.keys import SYNTHETIC_MARKER, SYNTHETIC_MARKER_TEXT

    write_text(root / SYNTHETIC_MARKER, SYNTHETIC_MARKER_TEXT)  # the demo secret is accepted here only
    meta_path = root / "synth.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("seed") != seed or old.get("centres") != centres or old.get("ct_size") != ct_size \
                or old.get("scale", 1.0) != scale \
                or old.get("pet") != pet or old.get("version") != GENERATOR_VERSION:
            raise ConfigError(f"{root}: holds a cohort synthesised with other settings ({old.get('seed')=}, "
                              f"{old.get('centres')=}); use an empty folder")
    items = []
    for g in range(patients):
        c, n = g % centres + 1, g // centres + 1
        items.append((f"C{c}-{n:04d}", dict(seed=seed, centre=c, number=n, root=str(root), ct_size=ct_size,
                                             pet_size=pet_size, pet=pet, scale=scale)))
    rows: dict[str, dict] = {}
    own = not isinstance(executor, Executor)
    ex = executor if not own else get_executor(executor or "serial")
    try:
        for o in ex.map_unordered(synth_patient, items):
            if not o.ok:
                raise RuntimeError(f"synth: patient {o.key} failed: {o.error}")
            rows[o.key] = o.value
    finally:
        if own:
            ex.close()
    ordered = [rows[k] for k, _ in items]

    quirks = []
    for c in range(1, centres + 1):
        pts = [r for r in ordered if r["centre"] == f"C{c}"]
        header, crow, q = clinical_rows(pts, c, seed)
        quirks += q
        write_text(root / "clinical" / f"C{c}.csv", _csv_text(header, crow))
    gt_cols = list(ordered[0].keys())
    gt = [gt_cols] + [[str(r[k]) for k in gt_cols] for r in ordered]
    # scanner parameters per centre beside each patient
    prof_cols = ["ct_offset_hu", "ct_noise_hu", "ct_kernel_sigma", "kernel_name", "slice_thickness_mm",
                 "pixel_spacing_mm", "pet_scale", "roi_name"]
    gt[0] = gt[0] + prof_cols
    for i, r in enumerate(ordered, start=1):
        prof = asdict(centre_profile(int(r["centre"][1:])))
        prof["pixel_spacing_mm"] = prof["pixel_spacing_mm"] / scale
        gt[i] = gt[i] + [str(prof[k]) for k in prof_cols]
    write_text(root / "ground_truth.csv", _csv_text(gt[0], gt[1:]))
    summary = {
        "version": GENERATOR_VERSION, "seed": seed, "patients": patients, "centres": centres,
        "ct_size": ct_size, "pet_size": pet_size, "pet": pet, "scale": scale,
        "centre_profiles": [asdict(centre_profile(c)) for c in range(1, centres + 1)],
        "clinical_quirks": quirks,
        "outcome_counts": {str(k): sum(1 for r in ordered if r["outcome"] == k) for k in (0, 1)},
    }
    write_json(meta_path, summary)
    return summary
