"""CLI: ``biomarkers ibsi`` (IBSI 1 phantoms through the extraction code vs the reference tables)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app


@app.command("ibsi")
def ibsi(
    mode: Optional[str] = typer.Option(
        None, "--mode", "-m",
        help="pyradiomics: pyradiomics + the mapping table (and its exact corrections); ibsi: with the IBSI "
        "module (biomarkers.features.ibsi). Default: ibsi.",
    ),
    case: List[str] = typer.Option(
        [], "--case", "-c", help="digital_phantom, config_A .. config_E (repeatable; default: all six)."
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Save every comparison row and the totals as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Save every comparison row as CSV."),
    summary: bool = typer.Option(False, "--summary", help="Print the totals only (no per-feature lines)."),
    configs: Optional[Path] = typer.Option(None, "--configs", help="Folder of the IBSI parameter files "
                                           "(default: those shipped with the package, as in configs/radiomics)."),
    standard: int = typer.Option(1, "--standard", min=1, max=2, help="1: IBSI 1 features (default); 2: IBSI 2 "
                                 "filters, phase 1 response maps (needs the IBSI 2 data of BIOMARKERS_SHARED_DATA) "
                                 "and phase 2 (--case phase1, a test id such as 2.a, A or B; default all)."),
) -> None:
    """Run the IBSI 1 digital phantom and CT phantom configurations A-E and compare with IBSI.

    Per feature: value, reference, tolerance and pass / deviating / not implemented; totals per
    feature family and overall (reference values only).
    """
    import contextlib

    from ..locks import output_lock

    with contextlib.ExitStack() as held:  # the folders of --json/--csv: one ibsi run writing them at a time
        for folder in sorted({str(p.parent) for p in (json_out, csv_out) if p is not None}):
            held.enter_context(output_lock(Path(folder), "biomarkers ibsi", tree=False))
        _ibsi(mode, case, json_out, csv_out, summary, configs, standard)


def _ibsi(mode, case, json_out, csv_out, summary, configs, standard) -> None:
    import pandas as pd

    from ..errors import ConfigError
    from ..features.ibsi_check import CASES, is_3d_family, run_case, totals
    from ..io import write_csv, write_json
    from ..logs import echo

    if standard == 2:  # IBSI 2 convolutional filters (biomarkers.features.filters.check)
        from ..features.filters.check import run_standard2

        res = run_standard2(case or None, configs_dir=configs, echo=echo, summary=summary)
        rows = pd.concat([df.assign(phase=ph) for ph, df in res.items()], ignore_index=True)
        if csv_out:
            write_csv(csv_out, rows)
        if json_out:
            write_json(json_out, {"standard": 2, "rows": rows.where(rows.notna(), None).to_dict(orient="records")})
        return

    mode = mode or "ibsi"
    cases = case or list(CASES)
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise ConfigError(f"--case {bad[0]!r}: unknown; choose from {', '.join(CASES)}")
    frames = []
    for c in cases:
        df = run_case(c, mode, configs=configs)
        frames.append(df)
        echo(f"\n== IBSI 1 {c} (mode {mode}) ==")
        if not summary:
            for r in df.itertuples(index=False):
                if r.status == "no reference":
                    continue
                v = "-" if pd.isna(r.value) else f"{r.value:.4g}"
                tol = "" if pd.isna(r.tolerance) else f"{r.tolerance:g}"
                echo(f"  {r.status:15s} {r.tag:34s} value {v:>10s}  ref {r.reference:>10.4g}  tol {tol:>6s}  {r.family}")
        fam = totals(df)
        for _, r in fam.iterrows():
            echo(f"  {r['family']:50s} pass {r['pass']:4d}  deviating {r['deviating']:4d}  "
                 f"not implemented {r['not implemented']:4d}  of {r['total']}")
        for label, sub in (("3D families", df[df["family"].map(is_3d_family)]), ("all", df)):
            t = totals(sub, None)
            if len(t):
                row = t.iloc[0]
                echo(f"  TOTAL {label:14s} pass {row['pass']}  deviating {row['deviating']}  "
                     f"not implemented {row['not implemented']}  of {row['total']} reference values")
    allrows = pd.concat(frames, ignore_index=True)
    if csv_out:
        write_csv(csv_out, allrows)
    if json_out:
        write_json(json_out, {
            "mode": mode,
            "rows": allrows.where(allrows.notna(), None).to_dict(orient="records"),
            "totals_by_family": totals(allrows).to_dict(orient="records"),
            "totals": totals(allrows, None).to_dict(orient="records"),
        })
