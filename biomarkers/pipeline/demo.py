"""``biomarkers demo``: synthesise a multicentre cohort, run the whole pipeline, show the leaderboard.

Everything the demo needs is embedded here (pipeline config, pyradiomics parameters,
clinical schema, experiment), so it runs from an installed package without the
repository's ``configs/`` (``configs/demo.yaml`` is the same pipeline as a file).
The data are synthetic, so de-identification runs in explicit demo mode (public
demo secret unless ``BIOMARKERS_SECRET`` is set).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import yaml

from biomarkers.io import write_text
from biomarkers.logs import echo

#: pyradiomics parameters of the demo (original image; CT in HU, PET in SUV).
DEMO_PARAMS = {
    "ct": {
        "setting": {"label": 1, "binWidth": 25, "voxelArrayShift": 0, "interpolator": "sitkBSpline",
                    "resampledPixelSpacing": [3.5, 3.5, 3.5], "normalize": False, "geometryTolerance": 0.0001},
        "imageType": {"Original": {}},
        "featureClass": {"shape": None, "firstorder": None, "glcm": None, "glrlm": None, "glszm": None},
    },
    "pet": {
        "setting": {"label": 1, "binWidth": 0.25, "voxelArrayShift": 0, "interpolator": "sitkBSpline",
                    "resampledPixelSpacing": [7.0, 7.0, 4.0], "normalize": False, "geometryTolerance": 0.0001},
        "imageType": {"Original": {}},
        "featureClass": {"firstorder": None, "glcm": None, "glszm": None},
    },
}

#: Clinical schema of the synthetic centres (each centre exports its own columns and codings).
DEMO_SCHEMA = {
    "patient_id": {"column": "patient_id", "pattern": "[Cc][0-9]+-[0-9]+"},
    "centre_column": "centre",
    "join": "patient",
    "how": "inner",
    "missing_values": ["", "NA", "N/A", "-999", "unknown"],
    "centres": {
        "C1": {"files": ["C1.csv"]},
        "C2": {"files": ["C2.csv"], "columns": {"PatientID": "patient_id", "Age_at_Dx": "age", "Gender": "sex",
                                                 "Smoker": "smoking", "TNM_Stage": "stage", "Response": "outcome"}},
        "C3": {"files": ["C3.csv"], "columns": {"MRN": "patient_id", "Age (years)": "age", "Sex": "sex",
                                                 "Smoking status": "smoking", "Stage": "stage", "Event": "outcome"}},
    },
    "variables": {
        "age": {"type": "float", "unit": "years", "min": 18, "max": 110, "age": True},
        "sex": {"type": "category", "mapping": {"M": "male", "1": "male", "male": "male",
                                                 "F": "female", "2": "female", "female": "female"}},
        "smoking": {"type": "category", "mapping": {"never": "never", "N": "never", "Never smoker": "never",
                                                     "former": "ever", "current": "ever", "Y": "ever",
                                                     "Ex-smoker": "ever", "Current smoker": "ever"}},
        "stage": {"type": "int", "allowed": [1, 2, 3, 4],
                  "mapping": {"I": 1, "II": 2, "III": 3, "IV": 4, "Stage I": 1, "Stage II": 2, "Stage III": 3,
                              "Stage IV": 4}},
        "outcome": {"type": "int", "required": True, "allowed": [0, 1],
                    "mapping": {"responder": 1, "non-responder": 0, "TRUE": 1, "FALSE": 0}},
    },
}

#: The demo experiment: does a radiomics signature predict the outcome, with and without ComBat?
DEMO_EXPERIMENT = {
    "name": "demo-outcome",
    "description": "Synthetic PET/CT cohort: outcome from CT and PET radiomics (planted biomarker).",
    "input": {"table": "analysis.parquet", "id_column": "patient_id", "centre_column": "centre"},
    "target": {"column": "outcome", "positive": 1},
    "features": {"modalities": ["CT", "PT"], "image_types": ["original"],
                 "feature_classes": ["shape", "firstorder", "glcm", "glszm"]},
    "pipelines": [
        {"name": "logistic_combat", "harmonize": "combat", "redundancy": 0.9,
         "select": {"method": "univariate", "k": 8}, "model": {"type": "logistic"}, "grid": {"model__C": [0.1, 1.0]}},
        {"name": "logistic_raw", "harmonize": "none", "redundancy": 0.9,
         "select": {"method": "univariate", "k": 8}, "model": {"type": "logistic"}, "grid": {"model__C": [0.1, 1.0]}},
        {"name": "forest_combat", "harmonize": "combat", "redundancy": 0.9,
         "select": {"method": "univariate", "k": 8},
         "model": {"type": "random_forest", "params": {"n_estimators": 200, "max_depth": 4}}},
    ],
    "validation": {"outer_folds": 5, "outer_repeats": 1, "inner_folds": 3, "bootstrap": 500, "seed": 0},
    "registered_model": "demo-outcome",  # the README's `biomarkers predict models:/demo-outcome/1 ...`
}


def demo_config(params_dir: str = "params") -> dict:
    """The demo pipeline config (paths relative to the demo folder)."""
    return {
        "name": "demo",
        "source": {"dicom": "cohort/dicom", "clinical": ["cohort/clinical/*.csv"]},
        "out": ".",
        "executor": "local",
        "tracking": {"uri": "mlflow.db", "experiment": "demo-pipeline"},
        "deid": {"demo": True},
        "ingest": {"masks": {"rois": {"GTV": ["GTV", "GTV_primary", "gtv"]}}},
        "extract": {"params": {"CT": f"{params_dir}/ct.yaml", "PT": f"{params_dir}/pet.yaml"}},
        "clinical": {"schema": copy.deepcopy(DEMO_SCHEMA)},
        "experiments": {"run": True, "inline": [copy.deepcopy(DEMO_EXPERIMENT)]},
    }


def centre_effect(table_path: str | Path, alpha: float = 0.01) -> dict:
    """How many radiomics features differ between centres (Kruskal-Wallis p < ``alpha``), before and
    after ComBat (fitted on all patients, as a descriptive check; the experiments fit it inside CV)."""
    import numpy as np
    import pandas as pd
    from scipy.stats import kruskal

    from biomarkers.modeling.data import parse_feature
    from biomarkers.modeling.transformers import ComBatHarmonizer

    df = pd.read_parquet(table_path)
    cols = [c for c in df.columns if parse_feature(c) is not None and parse_feature(c).feature_class != "shape"
            and pd.api.types.is_numeric_dtype(df[c])]
    X = df[cols].astype(float)
    X = X.loc[:, X.notna().mean() > 0.9]
    X = X.fillna(X.median()).loc[:, lambda d: d.std() > 1e-9]
    centres = df["centre"].astype(str)

    def n_sig(frame: pd.DataFrame) -> int:
        n = 0
        for c in frame.columns:
            groups = [frame.loc[centres == g, c].to_numpy() for g in sorted(centres.unique())]
            if len(groups) > 1 and np.isfinite(kruskal(*groups).pvalue) and kruskal(*groups).pvalue < alpha:
                n += 1
        return n

    before = n_sig(X)
    harm = ComBatHarmonizer("centre").fit_transform(pd.concat([X, centres.rename("centre")], axis=1))
    after = n_sig(pd.DataFrame(harm, columns=X.columns))
    return {"features": int(X.shape[1]), "centre_effect_before": before, "centre_effect_after": after, "alpha": alpha}


def run_demo(out: str | Path = "demo_out", patients: int = 60, centres: int = 3, seed: int = 7,
             executor: str | None = None) -> dict:
    """Synthesise the cohort into ``OUT/cohort``, run the pipeline into ``OUT``, print the results."""
    from biomarkers.synth import synthesize

    from .config import config_from_dict
    from .runner import Pipeline

    out = Path(out).resolve()
    t0 = time.time()
    echo(f"[demo] synthesising {patients} patients in {centres} centres into {out / 'cohort'}")
    synthesize(out / "cohort", patients=patients, centres=centres, seed=seed, executor=executor or "local")
    echo(f"[demo] synthetic cohort ready ({time.time() - t0:.0f} s)")
    for name, params in DEMO_PARAMS.items():
        write_text(out / "params" / f"{name}.yaml", yaml.safe_dump(params, sort_keys=False))
    data = demo_config()
    if executor:
        data["executor"] = executor
    write_text(out / "demo.yaml", "# written by 'biomarkers demo'; rerun with: biomarkers run demo.yaml\n"
               + yaml.safe_dump(data, sort_keys=False))
    cfg = config_from_dict(data, out, source=str(out / "demo.yaml"))
    pipe = Pipeline(cfg)
    report = pipe.run()
    result = {"report": report.to_dict(), "elapsed_s": round(time.time() - t0, 1)}
    echo("")
    echo(report.summary())
    analysis = out / "analysis.parquet"
    if analysis.is_file():
        ce = centre_effect(analysis)
        result["centre_effect"] = ce
        echo(f"\nCentre effect: {ce['centre_effect_before']}/{ce['features']} radiomics features differ between "
             f"centres (Kruskal-Wallis p<{ce['alpha']}) before ComBat, {ce['centre_effect_after']} after.")
    exps = pipe.stages.get("experiments")
    for summary in (exps.details.get("experiments", []) if exps else []):
        echo(f"\nLeaderboard of experiment '{summary['name']}' (nested CV, 95% bootstrap CI):")
        for row in summary.get("leaderboard", []):
            echo(f"  {row['pipeline']:<18} AUC {row['auc']:.3f}  [{row['auc_ci_low']:.3f}, {row['auc_ci_high']:.3f}]")
        result.setdefault("leaderboards", {})[summary["name"]] = summary.get("leaderboard", [])
        best = max(summary.get("leaderboard", []), key=lambda r: r["auc"], default=None)
        if best is not None:
            found = best["auc_ci_low"] > 0.5
            result["biomarker_found"] = found
            echo(f"  -> planted biomarker {'FOUND' if found else 'NOT found'}: best pipeline {best['pipeline']}, "
                 f"lower 95% CI bound of the AUC {best['auc_ci_low']:.3f} {'>' if found else '<='} 0.5")
    uri = pipe.tracking_uri()
    echo(f"\nDone in {time.time() - t0:.0f} s. Outputs in {out}; run report: {out / 'run_report.json'}")
    mlflow_cmd = Path(sys.executable).with_name("mlflow")  # the environment's own mlflow script
    mlflow_cmd = str(mlflow_cmd) if mlflow_cmd.exists() else "mlflow"
    echo(f"Open the MLflow UI:  {mlflow_cmd} ui --backend-store-uri {uri}   (then browse http://127.0.0.1:5000)")
    if exps and exps.details.get("experiments"):
        from biomarkers.tracking import get_or_create_experiment
        from biomarkers.tracking.store import ui_url

        for summary in exps.details["experiments"]:  # the model-training view, child runs with their metrics
            eid = get_or_create_experiment(summary["name"], uri)
            echo(f"  experiment '{summary['name']}': {ui_url('http://127.0.0.1:5000', eid)}")
    if (out / "qc" / "index.html").is_file():
        echo(f"Quality-control report (open in a browser): {out / 'qc' / 'index.html'}")
    return result
