"""Issue 14 item 8: the README's modelling examples run as written after ``biomarkers demo`` (each line is
checked to appear verbatim in README.md, then executed in a folder laid out as the repository root)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [
    "biomarkers experiment experiments/demo.yaml --tracking-uri demo_out/mlflow.db",
    "biomarkers compare demo-outcome --tracking-uri demo_out/mlflow.db",
    "biomarkers predict models:/demo-outcome/1 demo_out/analysis.parquet --out scores.csv --tracking-uri demo_out/mlflow.db",
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "BIOMARKERS_SECRET")}
    return subprocess.run([sys.executable, "-m", "biomarkers", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900)


def test_examples_are_in_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for line in EXAMPLES:
        assert line in readme, line
    assert "MR_T1_" not in readme.split("## Modelling experiments")[1].split("## End-to-end")[0]


@pytest.mark.slow
def test_readme_examples_run_after_the_demo(tmp_path):
    root = tmp_path / "repo"
    (root / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "demo.yaml", root / "experiments" / "demo.yaml")
    r = _run(["demo", "--patients", "30", "--executor", "local:2"], root)  # the README's first command (smaller)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in EXAMPLES:
        r = _run(shlex.split(line)[1:], root)
        assert r.returncode == 0, f"{line}\n{r.stdout}{r.stderr}"
    scores = pd.read_csv(root / "scores.csv")
    assert len(scores) == len(pd.read_parquet(root / "demo_out" / "analysis.parquet"))


def test_wrong_modality_name_lists_those_available(tmp_path):
    from biomarkers.errors import InputError
    from biomarkers.modeling.data import select_feature_columns
    from biomarkers.modeling.spec import FeatureSubset

    df = pd.DataFrame({"patient_id": ["a"], "CT_original_firstorder_Mean": [1.0], "PT_original_firstorder_Mean": [2.0]})
    with pytest.raises(InputError, match=r"no feature column of features.modalities \['MR_T1', 'PET'\]: no such "
                                         r"modality in the table \(it has CT, PT\)"):
        select_feature_columns(df, FeatureSubset(modalities=["CT", "MR_T1", "PET"]), {"patient_id"})
    assert select_feature_columns(df, FeatureSubset(modalities=["P*"]), {"patient_id"}) == ["PT_original_firstorder_Mean"]
