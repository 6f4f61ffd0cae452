"""A release folder (:data:`RELEASE_FILES` + :data:`MANIFEST`, the SHA-256 of every other file) and its
readers: checksum verification, and tables read from a file or a verified release folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from ..io import sha256_file

FEATURES = "features.parquet"
CLINICAL = "clinical.parquet"
RELEASE_FILES = [FEATURES, CLINICAL, "data_dictionary.csv", "data_dictionary.md", "README.md"]
MANIFEST = "manifest.json"


def verify_release(folder: str | Path) -> list[str]:
    """Re-hash every file listed in the manifest; return the problems (empty: the release verifies)."""
    folder = Path(folder)
    m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for f, info in m["files"].items():
        p = folder / f
        if not p.is_file():
            problems.append(f"{f}: missing")
        elif sha256_file(p) != info["sha256"]:
            problems.append(f"{f}: checksum mismatch")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in m["files"] and p.name != MANIFEST)
    problems += [f"{f}: not in the manifest" for f in extra]
    return problems


def read_table(path: str | os.PathLike):
    """A Parquet/CSV/TSV table, or a release folder's features and clinical tables joined per patient after
    its checksums verify (feature columns prefixed ``<MODALITY>_``, as ``biomarkers link`` with ``join: patient``);
    :class:`InputError` naming the file otherwise."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        return read_release_table(p)
    if not p.is_file():
        raise InputError(f"{p}: table not found")
    try:
        if p.suffix.lower() in (".csv", ".tsv"):
            return pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
        return pd.read_parquet(p)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{p}: cannot read table ({type(err).__name__}: {err})") from None


def read_release_table(folder: str | os.PathLike):
    """One row per patient from a partner release folder (checksums verified first)."""
    import pandas as pd

    from ..clinical.link import link
    
    folder = Path(folder)
    missing = [f for f in (MANIFEST, FEATURES, CLINICAL) if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: not a table file nor a release folder (missing {', '.join(missing)})")
    problems = verify_release(folder)
    if problems:
        raise InputError(f"{folder}: release does not verify: {'; '.join(problems[:5])}")
    table, _report = link(pd.read_parquet(folder / FEATURES), pd.read_parquet(folder / CLINICAL),
                          join="patient")
    return table
