"""CLI: ``biomarkers verify OUT``: check a whole output tree against the records written with it.

Exit status: 0 every file is as written, 3 problems found (one line each: the file relative
to OUT, then ``missing``, ``truncated`` or ``changed since written``), 2 OUT is not a folder
or holds no biomarkers output.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

PROBLEMS_FOUND = 3


def tree_problems(out: Path, voxels: bool = False) -> tuple[list, int]:
    """``(problems, folders checked)`` of every output folder below ``out`` (every file hashed):

    - each folder with integrity records (``.integrity.json``: an ingest OUT, a FEATURES folder),
      plus the files its manifest (``manifest.parquet``) or provenance (``provenance.json``) names;
    - a pipeline OUT's stage state (``.pipeline/state.json``: each stage's recorded outputs);
    - each release folder (``manifest.json`` with ``files``: sha256 and bytes).

    ``voxels``: also decompress every converted NIfTI of a manifest and compare its voxels with the
    row's ``content_hash`` (:func:`biomarkers.io.sha256_array`), independently of the file records.
    """
    import json

    from ..integrity import LEDGER, CHANGED, FileRecord, Ledger, Problem, check
    from ..io import FileHasher, walk_files

    problems: list = []
    checked = 0
    listing = [rel for rel, _, _, _ in walk_files(out, hidden=True)]

    def folders(name: str) -> list[str]:
        return sorted({rel[: -len(name)] for rel in listing if rel == name or rel.endswith("/" + name)})

    ledgers = folders(LEDGER)
    for pre in sorted(set(ledgers) | {f for f in folders("manifest.parquet") + folders("provenance.json")
                                      if f not in folders("manifest.json")}):
        led = Ledger(out / pre if pre else out, prefix=pre)
        named = set(led.files)
        if (out / pre / "manifest.parquet").is_file() and not led.damaged:
            try:
                from ..manifest import Manifest

                rows = [r for r in Manifest.read(out / pre).rows if r.path and r.status == "converted"]
                named |= {r.path for r in rows}
                if voxels:
                    problems += _voxel_problems(out / pre, pre, rows)
            except Exception:  # noqa: BLE001 - reported as the manifest's own problem
                named.add("manifest.parquet")
        if (out / pre / "provenance.json").is_file():
            try:
                items = json.loads((out / pre / "provenance.json").read_text(encoding="utf-8")).get("items", {})
                named |= {f"items/{k}.parquet" for k in items}
            except ValueError:
                problems.append(Problem(f"{pre}provenance.json", CHANGED, "not valid JSON"))
        problems += led.problems(sorted(named), full=True) if led.present and not led.damaged else led.problems([])
        checked += 1
    for pre in folders(".pipeline/state.json"):
        from ..pipeline.cache import StageState

        state = StageState(out / pre / ".pipeline" / "state.json")
        hasher = FileHasher(None)
        for stage in state.data:
            problems += [Problem(pre + p.path, p.word, p.detail) for p in state.problems(stage, hasher, full=True)
                         if not any(pre + p.path == q.path for q in problems)]
        checked += 1
    for pre in folders("manifest.json"):
        try:
            files = json.loads((out / pre / "manifest.json").read_text(encoding="utf-8")).get("files")
        except ValueError:
            problems.append(Problem(f"{pre}manifest.json", CHANGED, "not valid JSON"))
            continue
        if not isinstance(files, dict):
            continue  # not a release manifest
        for f, info in sorted(files.items()):
            rec = FileRecord(int(info.get("bytes", -1)), str(info.get("sha256", "")))
            if rec.size < 0:
                rec = FileRecord((out / pre / f).stat().st_size if (out / pre / f).is_file() else 0, rec.sha256)
            p = check(out / pre / f, rec, f"{pre}{f}", full=True)
            if p is not None:
                problems.append(p)
        checked += 1
    one = {}
    for p in problems:  # one line per file: the record's word before the voxel check's
        if p.path not in one or "content_hash" in one[p.path].detail:
            one[p.path] = p
    return sorted(one.values(), key=lambda p: p.path), checked


def _voxel_problems(folder: Path, pre: str, rows) -> list:
    from ..dicom.ingest import voxel_hash
    from ..integrity import CHANGED, Problem

    out = []
    for r in rows:
        if r.content_hash and (folder / r.path).is_file():
            try:
                ok = voxel_hash(folder / r.path) == r.content_hash
            except Exception:  # noqa: BLE001 - unreadable: its record check reports how
                continue
            if not ok:
                out.append(Problem(f"{pre}{r.path}", CHANGED, "voxels differ from the manifest's content_hash"))
    return out


@app.command("verify")
def verify(
    out: Path = typer.Argument(..., help="An output tree: an ingest OUT, a FEATURES folder, a pipeline OUT or a "
                               "release folder (or a folder holding several)."),
    voxels: bool = typer.Option(False, "--voxels", help="Also decompress every NIfTI of a manifest and compare "
                                "its voxels with the row's content_hash (slower)."),
) -> None:
    """Check every output file against the size and SHA-256 recorded when it was written.

    Prints one line per problem (the file relative to OUT: missing, truncated, changed since
    written). Exit status 0 when every file is as written, 3 when problems were found, 2 when
    OUT is not a folder or holds no biomarkers output.
    """
    from ..errors import InputError
    from ..logs import echo

    if not out.is_dir():
        raise InputError(f"{out}: not a folder")
    problems, checked = tree_problems(out, voxels=voxels)
    if not checked:
        raise InputError(f"{out}: no biomarkers output here (no .integrity.json, manifest.parquet, "
                         "provenance.json, .pipeline/state.json or release manifest.json)")
    for p in problems:
        print(str(p), flush=True)
    if problems:
        echo(f"verify: {len(problems)} problem(s) in {checked} output folder(s); rerun the step that wrote each "
             "file (ingest, extract or run): it redoes what is damaged")
        raise SystemExit(PROBLEMS_FOUND)
    echo(f"verify: {checked} output folder(s), every file as written")
