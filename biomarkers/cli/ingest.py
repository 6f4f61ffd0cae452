"""CLI: ``biomarkers ingest SRC OUT`` (index, qualify and convert DICOM to NIfTI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command("ingest")
def ingest(
    src: Path = typer.Argument(..., help="Folder of DICOM files (any names, nested; DICOMDIR ignored). Never modified."),
    out: Path = typer.Argument(..., help="Output dataset folder: manifest.parquet/.csv, report.json, images/, masks/."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Ingest settings YAML (see configs/ingest.yaml)."),
    executor: str = typer.Option(
        "auto",
        "--executor",
        "-e",
        help="Where series convert: auto (in this process for small jobs, <= 16 MB of source files, else local), "
        "local (a process per core), local:N, serial or dask://HOST:PORT.",
    ),
    no_deid: bool = typer.Option(False, "--no-deid", help="Write original identifiers (no pseudonyms). Recorded in report.json."),
    demo: bool = typer.Option(False, "--demo", help="Use the public demo secret when BIOMARKERS_SECRET is unset (synthetic data only)."),
    linkage_table: Optional[Path] = typer.Option(
        None, "--linkage-table", help="Write the original-id -> pseudonym CSV here (must be outside OUT; mode 0600)."
    ),
    source_report: Optional[Path] = typer.Option(
        None,
        "--source-report",
        help="Also write the unused input files with their paths relative to SRC (and their report.json "
        "reference) to this JSON file, for the site (must be outside OUT; mode 0600).",
    ),
    index_cache: Optional[str] = typer.Option(
        None,
        "--index-cache",
        help="Header cache between runs (overrides the config's index_cache): auto (the user's cache folder), off, "
        "or a folder outside OUT and SRC. It holds original identifiers and stays on this side.",
    ),
    show_paths: bool = typer.Option(False, "--show-paths", help="Console lines also give the paths (relative to "
                                    "SRC) of unused files; by default they are named by keyed reference only."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Index and qualify only: print what would be converted; nothing is written to OUT "
        "(the source-side index cache is updated)."),
) -> None:
    """Index, qualify and convert DICOM series under SRC to NIfTI in OUT.

    Exit status 0 when the run completed, even if some series were skipped or
    failed (see OUT/report.json); 2 for invalid input, configuration or secret.
    """
    from ..config import load_yaml
    from ..dicom.ingest import Ingest, IngestSettings
    from ..errors import PrivacyError
    from ..logs import echo
    from ..logs import show_paths as _show_paths

    _show_paths(show_paths)

    settings = load_yaml(config, IngestSettings) if config else IngestSettings()
    if no_deid or demo:
        deid = settings.deid.model_copy(update={"enabled": settings.deid.enabled and not no_deid, "demo": settings.deid.demo or demo})
        settings = settings.model_copy(update={"deid": deid})
    if index_cache is not None:
        settings = settings.model_copy(update={"index_cache": index_cache})
    for what, path in (("linkage table", linkage_table), ("source report", source_report)):
        if path is not None:
            lt, root = path.resolve(), out.resolve()
            if lt == root or root in lt.parents:
                raise PrivacyError(f"{path}: the {what} must not be written inside the output folder {out}")
    if linkage_table is not None and no_deid:
        raise PrivacyError("--linkage-table needs de-identification (drop --no-deid)")
    ing = Ingest(src, out, settings, executor=executor)
    ing.validate()
    if dry_run:
        plan = ing.plan()
        echo(f"dry run: {plan.summary()}")
        for job in plan.items:
            vols = f" x {job.stack.n_volumes} volumes" if job.stack.volumes else ""
            echo(f"  convert  {job.ref.path}  ({len(job.stack.files)} slices{vols})")
        for r in plan.cached:
            echo(f"  current  {r.path}")
        for r in plan.rows:
            echo(f"  skip     {r.patient_id}/{r.modality}: {r.reason}")
        for u in _unused_refs(ing, plan.index):
            echo(f"  not used {u['shown']}: {u['reason']}" + (f" ({u['dup_shown']})" if u["dup_shown"] else ""))
        return
    report = ing.run()
    echo(report.summary())
    unused = ing.last_unused
    if unused:
        echo(f"  {len(unused)} input file(s) not used (by reference; --show-paths adds paths relative to SRC, "
             "--source-report writes them for the site):")
        for u in _unused_refs(ing, ing.last_index):
            echo(f"    {u['shown']}: {u['reason']}" + (f" ({u['dup_shown']})" if u["dup_shown"] else ""))
    if not settings.deid.enabled:
        echo("  WARNING: de-identification was disabled (--no-deid): outputs carry original identifiers")
    if source_report is not None:
        p = ing.write_source_report(source_report)
        echo(f"  source report (paths relative to SRC, keep at the site): {p}")
    if linkage_table is not None:
        p = ing.deidentifier.write_linkage_table(linkage_table, forbidden_root=out)
        echo(f"  linkage table: {p}")
    echo(f"  manifest: {out / 'manifest.parquet'}  report: {out / 'report.json'}")


def _unused_refs(ing, index) -> list[dict]:
    """Unused input files as the console shows them: keyed reference (``--show-paths``: and path)."""
    from ..logs import file_ref

    rows = ing.unused_files(index)
    refs = ing._unused_files_report(index) if ing.deidentifier.enabled else [
        {"ref": r["path"], "duplicate_of": r["duplicate_of"]} for r in rows]
    return [dict(reason=r["reason"], shown=file_ref(x["ref"], r["path"]),
                 dup_shown=file_ref(x["duplicate_of"], r["duplicate_of"]) if r["duplicate_of"] else "")
            for r, x in zip(rows, refs)]
