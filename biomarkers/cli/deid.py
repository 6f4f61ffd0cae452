"""CLI commands of the deid stage: ``deid-export`` (de-identified DICOM copies) and ``scan`` (leak check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import app


def _load_needles(path: Path) -> dict:
    """Needles file: JSON ``{label: value}`` / ``{label: [value, kind]}``, or CSV ``label,value[,kind]``."""
    from ..errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: needles file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object label -> value")
        return {str(k): (tuple(v) if isinstance(v, list) else str(v)) for k, v in data.items()}
    import csv

    out: dict = {}
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].startswith("#") or (n == 1 and row[0].strip().lower() == "label"):
            continue
        if len(row) < 2:
            raise InputError(f"{path}: row {n}: expected label,value[,kind]")
        kind = row[2].strip() if len(row) > 2 and row[2].strip() else None
        if kind and kind not in ("name", "id", "date", "text", "institution"):
            raise InputError(f"{path}: row {n}: kind must be name, id, date, text or institution (got {kind!r})")
        out[row[0].strip()] = (row[1], kind) if kind else row[1]
    return out


@app.command("deid-export")
def deid_export(
    src: Path = typer.Argument(..., help="Folder of DICOM files (searched recursively)."),
    out: Path = typer.Argument(..., help="Output folder for the de-identified copies (not inside SRC)."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML with sections 'deid' (DeidSettings) and 'export' (ExportSettings)."
    ),
    demo: bool = typer.Option(False, "--demo", help="Use the public demo secret if none is set (synthetic data only)."),
    linkage_table: Optional[Path] = typer.Option(
        None, "--linkage-table", help="Also write original id -> pseudonym CSV here (owner-only, never inside OUT)."
    ),
    show_paths: bool = typer.Option(False, "--show-paths", help="Console lines also give source paths (for the "
                                    "operator; report.json and logs name files by keyed reference only)."),
) -> None:
    """Write de-identified DICOM copies (PS3.15 basic profile, retain longitudinal with modified dates).

    UIDs are the same as in 'biomarkers ingest' with the same secret, so exported RTSTRUCT/SEG
    references stay consistent and exported series match the manifest.
    """
    from ..config import Settings, read_yaml, validate
    from ..deid import DeidSettings, Deidentifier
    from ..deid.export import ExportSettings
    from ..dicom.export import export_dicom
    from ..logs import echo
    from ..logs import show_paths as _show_paths

    _show_paths(show_paths)

    class _ExportConfig(Settings):
        deid: DeidSettings = DeidSettings()
        export: ExportSettings = ExportSettings()

    cfg = validate(_ExportConfig, read_yaml(config), source=str(config)) if config else _ExportConfig()
    deid_settings = cfg.deid.model_copy(update={"demo": cfg.deid.demo or demo})
    deid = Deidentifier(deid_settings)
    if linkage_table is not None:  # refuse a bad path before doing any work
        from ..errors import PrivacyError

        lt, root = linkage_table.resolve(), out.resolve()
        if lt == root or root in lt.parents:
            raise PrivacyError(f"{lt}: the linkage table must not be written inside the output folder {root}")
    from ..io import check_apart
    from ..locks import output_lock

    check_apart(src, out, "source folder", "export folder")  # before the lock creates OUT
    with output_lock(out, "biomarkers deid-export"):
        report = export_dicom(src, out, deid, cfg.export)
    if linkage_table is not None:
        deid.write_linkage_table(linkage_table, forbidden_root=out)
    echo(report.summary())
    echo(f"report: {out / 'report.json'}")


@app.command("scan")
def scan(
    paths: list[Path] = typer.Argument(..., help="Files or folders to scan (recursively)."),
    needles: Path = typer.Option(
        ..., "--needles", help="JSON {label: value | \\[value, kind]} or CSV label,value\\[,kind] "
                               "(kind: name/id/date/text/institution)."
    ),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help="Also scan this MLflow store (sqlite:///... or folder)."),
) -> None:
    """Search every byte of every file (and .gz/.zip/Parquet/SQLite content) for identifying values.

    Exit status 1 when anything is found (the hits are listed), 0 when clean.
    """
    from ..deid.scan import scan_files, scan_mlflow
    from ..logs import echo

    from ..errors import InputError

    for p in [*paths, needles]:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder to scan" if p != needles else f"{p}: needles file not found")
    table = _load_needles(needles)
    hits = scan_files(paths, table)
    if mlflow:
        hits += scan_mlflow(mlflow, table)
    for h in hits:
        echo(str(h))
    echo(f"scan: {len(hits)} hit(s) for {len(table)} value(s) in {', '.join(map(str, paths))}")
    if hits:
        raise SystemExit(1)
