"""Versioned, immutable partner releases of feature tables.

``build_release`` writes ``RELEASES/<name>-<version>/``: ``features.parquet``, ``clinical.parquet``,
``data_dictionary.csv``/``.md``, ``README.md`` and ``manifest.json`` (the SHA-256 of every other file;
each file is described in README.md, "Partner releases"), optionally ``<name>-<version>.tar.gz`` (+ ``.sha256``).
It is built in a temporary folder inside RELEASES and renamed into place at the end, so a
release is either complete or absent. An existing version is never overwritten.

The build is refused (:class:`~biomarkers.errors.PrivacyError`, nothing written) when
the de-identification scanner finds an identifying value in a released table, when
an original patient id occurs in any released file, or when a combination of
quasi-identifiers occurs fewer than ``k`` times.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
import platform
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import ConfigError, InputError, PrivacyError
from ..features.naming import OPTIONAL_KEY_COLUMNS, WIDE_TABLE, feature_columns, read_wide, value_columns
from ..io import atomic_path, sha256_file, sha256_json, write_csv, write_json, write_parquet, write_text
from .config import SEMVER, ReleaseConfig
from .dictionary import build_dictionary, dictionary_markdown, extraction_settings, read_provenance
from .privacy import age_band, check_k_anonymity, find_identifying, scan_for_originals
from .reader import CLINICAL, FEATURES, MANIFEST, RELEASE_FILES


class ReleaseExistsError(InputError):
    """The release version already exists (releases are immutable)."""


@dataclass
class ReleaseResult:
    name: str
    version: str
    path: Path
    manifest: dict
    archive: Path | None = None
    schema_changes: list[str] = field(default_factory=list)
    validation: object = None  # clinical ValidationReport
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "version": self.version, "path": str(self.path),
            "archive": None if self.archive is None else str(self.archive), "schema_changes": self.schema_changes,
            "mlflow_run_id": self.mlflow_run_id, "mlflow_error": self.mlflow_error,
            "files": self.manifest.get("files", {}), "cohort": self.manifest.get("cohort", {}),
        }

    def summary(self) -> str:
        m = self.manifest
        s = (f"release {self.name}-{self.version}: {m['cohort']['n_patients']} patients, "
             f"features {m['tables']['features.parquet']['rows']} rows x {m['tables']['features.parquet']['n_columns']} columns, "
             f"clinical {m['tables']['clinical.parquet']['rows']} rows x {m['tables']['clinical.parquet']['n_columns']} columns -> {self.path}")
        if self.schema_changes:
            s += f"\n  schema changes since {m['schema_changes']['previous_version']}:" + "".join(f"\n    {c}" for c in self.schema_changes)
        if self.archive:
            s += f"\n  archive: {self.archive}"
        if self.mlflow_run_id:
            s += f"\n  MLflow run: {self.mlflow_run_id}"
        if self.mlflow_error:
            s += f"\n  WARNING: not logged to MLflow ({self.mlflow_error})"
        return s


# --- versions ---------------------------------------------------------------------------------

def parse_version(v: str) -> tuple[int, int, int]:
    m = SEMVER.match(v or "")
    if not m:
        raise ConfigError(f"release version {v!r} is not of the form X.Y.Z (e.g. 1.0.0)")
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


def existing_versions(releases: Path, name: str) -> list[str]:
    """Versions of ``name`` present in ``releases`` (complete folders only), oldest first."""
    out = []
    if releases.is_dir():
        for p in releases.iterdir():
            if p.is_dir() and p.name.startswith(name + "-") and (p / MANIFEST).is_file():
                v = p.name[len(name) + 1:]
                if SEMVER.match(v):
                    out.append(v)
    return sorted(out, key=parse_version)


def next_version(releases: Path, name: str) -> str:
    vs = existing_versions(releases, name)
    if not vs:
        return "1.0.0"
    a, b, c = parse_version(vs[-1])
    return f"{a}.{b}.{c + 1}"


# --- schema of released tables and changes between versions -----------------------------------

def column_digest(s: pd.Series) -> str:
    """Content hash of a column's values in row order (used to recognise renamed columns)."""
    import hashlib

    h = pd.util.hash_pandas_object(s.reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def table_schema(df: pd.DataFrame) -> list[dict]:
    return [{"name": c, "dtype": str(df[c].dtype), "digest": column_digest(df[c])} for c in df.columns]


def schema_changes(old: dict, new: dict) -> list[str]:
    """Human-readable changes between two manifests' ``tables`` sections (renamed, dropped, added, retyped)."""
    changes = []
    for f in sorted(set(old) | set(new)):
        o = {c["name"]: c for c in old.get(f, {}).get("columns", [])}
        n = {c["name"]: c for c in new.get(f, {}).get("columns", [])}
        if f not in old:
            changes.append(f"{f}: new file")
            continue
        if f not in new:
            changes.append(f"{f}: file dropped")
            continue
        dropped = [c for c in o if c not in n]
        added = [c for c in n if c not in o]
        for d in list(dropped):
            match = [a for a in added if n[a]["digest"] == o[d]["digest"] and n[a]["dtype"] == o[d]["dtype"]]
            if len(match) == 1:
                changes.append(f"{f}: column renamed {d!r} -> {match[0]!r}")
                dropped.remove(d)
                added.remove(match[0])
        changes += [f"{f}: column dropped {d!r}" for d in dropped]
        changes += [f"{f}: column added {a!r}" for a in added]
        for c in o:
            if c in n and o[c]["dtype"] != n[c]["dtype"]:
                changes.append(f"{f}: column {c!r} type changed {o[c]['dtype']} -> {n[c]['dtype']}")
    return changes


# --- the build ---------------------------------------------------------------------------------

def select_features(features: pd.DataFrame, cfg: ReleaseConfig) -> pd.DataFrame:
    sel = cfg.features
    df = features
    if sel.modalities is not None:
        df = df[df["modality"].isin(sel.modalities)]
    if sel.rois is not None:
        df = df[df["roi"].isin(sel.rois)]
    fcols = feature_columns(df)
    keep = [c for c in fcols if any(fnmatch.fnmatchcase(c, p) for p in sel.include)
            and not any(fnmatch.fnmatchcase(c, p) for p in sel.exclude)]
    if not keep:
        raise ConfigError(f"release features.include/exclude select no feature column (of {len(fcols)})")
    optional = [c for c in OPTIONAL_KEY_COLUMNS if c in df.columns]  # volume / filter: keys, kept with the rows
    return df[sel.key_columns + optional + keep].reset_index(drop=True)


def software_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("biomarkers", "pyradiomics-bhklab", "pyradiomics", "pandas", "pyarrow", "numpy", "SimpleITK", "pydantic", "pandera"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _readme(cfg: ReleaseConfig, version: str, manifest: dict) -> str:
    c = manifest["cohort"]
    t = manifest["tables"]
    lines = [
        f"# {cfg.title or cfg.name} - release {version}", "",
        cfg.description or "", "",
        f"- Release: `{cfg.name}-{version}`" + (f" for {cfg.partner}" if cfg.partner else ""),
        f"- Created (UTC): {manifest['created']}",
    ]
    if cfg.licence:
        lines.append(f"- Licence / terms: {cfg.licence}")
    lines += [
        "", "## Cohort", "", c["definition"] or "(no definition given)", "",
        f"- Patients: {c['n_patients']}; image series x ROI rows: {t['features.parquet']['rows']}",
        f"- Centres: {', '.join(f'{k} ({v})' for k, v in c['centres'].items()) or 'n/a'}",
        f"- Modalities: {', '.join(f'{k} ({v})' for k, v in c['modalities'].items())}; ROIs: {', '.join(c['rois'])}",
        "", "## Files", "", "| file | rows | columns | SHA-256 |", "|---|---|---|---|",
    ]
    for f in ("features.parquet", "clinical.parquet"):
        lines.append(f"| {f} | {t[f]['rows']} | {t[f]['n_columns']} | `{manifest['files'][f]['sha256']}` |")
    lines += [
        "| data_dictionary.csv / .md | | | see manifest.json |", "",
        "`features.parquet`: one row per patient x image series x ROI; feature columns are named as pyradiomics "
        "names them, `<image type>_<feature class>_<feature>` (e.g. `original_firstorder_Mean`). "
        "`clinical.parquet`: one row per patient. Join the two on `patient_id` (pseudonymous). "
        "Every column is described in `data_dictionary.csv` / `data_dictionary.md`.",
        "", "## Reading", "", "```python",
        "import pandas as pd", "features = pd.read_parquet('features.parquet')",
        "clinical = pd.read_parquet('clinical.parquet')",
        "table = features.merge(clinical, on='patient_id')", "```", "",
        "```sql", "-- DuckDB", "SELECT * FROM 'features.parquet' f JOIN 'clinical.parquet' c USING (patient_id);", "```", "",
        "## Verifying", "",
        "`manifest.json` lists the SHA-256 of every other file (`files`); e.g. `sha256sum features.parquet`.", "",
        "## Privacy", "",
        "Patient ids are keyed pseudonyms (the key stays at the hospital); image UIDs are replaced; no names, "
        "birth dates or real dates are released. Before release every table was scanned for identifying values and every "
        f"file for the original patient ids, and every combination of the quasi-identifiers "
        f"({', '.join(manifest['privacy']['quasi_identifiers']) or 'none'}) was checked to occur at least "
        f"k = {manifest['privacy']['k']} times. Do not attempt to re-identify patients.", "",
    ]
    if manifest.get("schema_changes", {}).get("changes"):
        sc = manifest["schema_changes"]
        lines += ["## Changes since " + sc["previous_version"], ""] + [f"- {x}" for x in sc["changes"]] + [""]
    sw = manifest["software"]
    lines += ["## Software", "", ", ".join(f"{k} {v}" for k, v in sw.items()), ""]
    return "\n".join(lines)


def build_release(
    features: str | Path,
    clinical_files: Iterable[str | Path] | pd.DataFrame,
    config: ReleaseConfig | str | Path,
    releases_dir: str | Path,
    version: str | None = None,
    archive: bool = False,
    schema=None,
    deidentifier=None,
    config_path: str | Path | None = None,
    tracking_uri: str | None | bool = None,
) -> ReleaseResult:
    """Build, check and write one release (see the module docstring).

    Args:
        features: FEATURES folder (``features_wide.parquet``, optional ``features_long.parquet``
            and ``provenance.json``) or a features_wide Parquet file.
        clinical_files: clinical exports, loaded with ``schema`` (pseudonymised there), or a
            table already produced by :func:`~biomarkers.clinical.load_clinical` (pseudonymised
            ``patient_id``; the original-id file scan then uses ``deidentifier.links()`` if given).
        config: the release configuration (or the path of its YAML file).
        releases_dir: folder holding all releases.
        version: ``X.Y.Z``; default: next patch version (``1.0.0`` for the first).
        archive: also write ``<name>-<version>.tar.gz``.
        schema: :class:`~biomarkers.clinical.ClinicalSchema` (default: ``config.clinical_schema``,
            relative to ``config_path``).
        deidentifier: default ``Deidentifier(schema.deid)`` (for raw clinical exports).
        tracking_uri: MLflow tracking URI (None: ``biomarkers.tracking.tracking_uri()``);
            ``False`` skips MLflow logging.

    Raises:
        ReleaseExistsError: the version exists. PrivacyError: identifying values or
        k-anonymity violations (the message says which). ConfigError, InputError.
    """
    from ..deid import DeidSettings
    from .config import load_release_config

    if isinstance(config, (str, Path)):
        config_path = config_path or config
        config = load_release_config(config)
    preloaded = isinstance(clinical_files, pd.DataFrame)
    releases, features = Path(releases_dir), Path(features)
    version = version or next_version(releases, config.name)
    parse_version(version)
    final = releases / f"{config.name}-{version}"
    if final.exists():
        raise ReleaseExistsError(f"{final}: release {config.name} {version} already exists; releases are immutable, use a new version")
    schema, deid = _resolve_schema(config, config_path, schema, deidentifier, preloaded)
    fsel = select_features(read_wide(features), config)
    config = _without_age_band(config, schema, clinical_files)
    clinical, vrep = _clinical_table(clinical_files, config, schema, deid, set(fsel["patient_id"].astype(str)))
    cohort = sorted(set(fsel["patient_id"].astype(str)) & set(clinical["patient_id"].astype(str)))
    if not cohort:
        raise InputError("release cohort is empty: no patient has both features and valid clinical data")
    n_clinical_only = int((~clinical["patient_id"].isin(cohort)).sum())
    clinical = clinical[clinical["patient_id"].isin(cohort)].sort_values("patient_id").reset_index(drop=True)
    frel = fsel[fsel["patient_id"].isin(cohort)].sort_values(["patient_id", "modality", "roi"], kind="stable").reset_index(drop=True)
    crel = clinical[["patient_id", *config.clinical_variables]].reset_index(drop=True)
    _check_privacy(config, clinical, {"features.parquet": frel, "clinical.parquet": crel},
                   deid.settings if deid is not None else (schema.deid if schema is not None else DeidSettings()),
                   {"features.parquet": value_columns(frel, read_provenance(features if features.is_dir() else features.parent))})
    excluded = {
        "features_without_clinical": int(fsel.loc[~fsel["patient_id"].isin(cohort), "patient_id"].nunique()),
        "clinical_without_features": n_clinical_only,
        "clinical_rows_rejected": None if vrep is None else int(vrep.n_read - vrep.n_kept),
    }
    releases.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{config.name}-{version}.", suffix=".tmp", dir=releases))
    try:
        manifest, changes = _write(tmp, config, version, releases, features, frel, crel, clinical, schema, excluded)
        links = deid.links() if deid is not None else {}
        hits = scan_for_originals(tmp, links.keys(), links)
        if hits:
            raise PrivacyError("release refused: original patient id(s) found in release files:\n  " + "\n  ".join(hits[:30]))
        write_json(tmp / MANIFEST, manifest)
        _publish(tmp, final, config.name, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = ReleaseResult(config.name, version, final, manifest, schema_changes=changes, validation=vrep)
    if archive:
        result.archive = write_archive(final)
    if tracking_uri is not False:
        try:
            result.mlflow_run_id = log_release(result, config, tracking_uri or None)
        except Exception as err:  # the release itself is complete and immutable: report, do not undo
            result.mlflow_error = f"{type(err).__name__}: {err}"
            logging.getLogger(__name__).warning(
                "release %s-%s was built but could not be logged to MLflow: %s", config.name, version, result.mlflow_error
            )
    return result


def _resolve_schema(config: ReleaseConfig, config_path, schema, deidentifier, preloaded: bool):
    """Step 1: the clinical schema (given, or ``config.clinical_schema`` relative to the config file) and the
    de-identifier (given, or ``Deidentifier(schema.deid)`` for raw clinical exports; None for a loaded table)."""
    from ..clinical.schema import load_schema
    from ..deid import Deidentifier

    if schema is None and config.clinical_schema:
        sp = Path(config.clinical_schema)
        if not sp.is_absolute() and config_path is not None:
            sp = Path(config_path).parent / sp
        schema = load_schema(sp)
    if schema is None and not preloaded:
        raise ConfigError("release config: clinical_schema is not set (and no schema given)")
    return schema, (deidentifier if (deidentifier is not None or preloaded) else Deidentifier(schema.deid))


def _without_age_band(config: ReleaseConfig, schema, clinical_files) -> ReleaseConfig:
    """``privacy.age_variable`` is optional: when the cohort has no such variable, ``age_band`` is not
    derived and is left out of the released variables and the quasi-identifiers (logged)."""
    age = config.privacy.age_variable
    known = set(clinical_files.columns) if isinstance(clinical_files, pd.DataFrame) else (
        set(schema.variables) | {"patient_id"} if schema is not None and hasattr(schema, "variables") else None)
    if not age or known is None or age in known or "age_band" in known:
        return config
    logging.getLogger(__name__).warning("release: privacy.age_variable %r is not a clinical variable: no age_band "
                                        "released or checked as a quasi-identifier", age)
    drop = {"age_band"}
    privacy = config.privacy.model_copy(update={"age_variable": None, "quasi_identifiers": [
        q for q in config.privacy.quasi_identifiers if q not in drop]})
    return config.model_copy(update={"privacy": privacy, "clinical_variables": [
        v for v in config.clinical_variables if v not in drop]})


def _clinical_table(clinical_files, config: ReleaseConfig, schema, deid, known: set[str]):
    """Step 2: the pseudonymised clinical table with the derived ``age_band`` and interval columns, and
    the validation report (None for a table loaded already)."""
    from ..clinical.load import load_clinical

    if isinstance(clinical_files, pd.DataFrame):
        clinical, vrep = clinical_files.copy(), None
        if "patient_id" not in clinical.columns:
            raise InputError("clinical table has no patient_id column")
        clinical["patient_id"] = clinical["patient_id"].astype("string")
        dup = clinical["patient_id"][clinical["patient_id"].duplicated()].unique()
        if len(dup):
            raise InputError(f"duplicated patient id(s) in the clinical table: {', '.join(map(str, dup))}")
    else:
        clinical, vrep = load_clinical(list(clinical_files), schema, deid, known_patients=known)
    if config.privacy.age_variable in clinical.columns:
        clinical["age_band"] = age_band(clinical[config.privacy.age_variable], config.privacy.age_band_years)
    for name, iv in config.intervals.items():
        miss = [c for c in (iv.start, iv.end) if c not in clinical.columns]
        if miss or name in clinical.columns:
            raise ConfigError(f"release intervals.{name}: " + (f"unknown date variable(s) {miss}" if miss else "name already used"))
        start, end = pd.to_datetime(clinical[iv.start]), pd.to_datetime(clinical[iv.end])
        clinical[name] = (end - start).dt.days.astype("Int64")
    unknown = [v for v in config.clinical_variables if v not in clinical.columns or v == "patient_id"]
    if unknown:
        raise ConfigError(f"release clinical_variables {unknown} are not clinical variables (known: {list(clinical.columns[1:])})")
    return clinical, vrep


def _check_privacy(config: ReleaseConfig, clinical: pd.DataFrame, tables: dict[str, pd.DataFrame], deid_settings,
                   values: dict[str, set[str]] | None = None) -> None:
    """Step 3 (before anything is written): k-anonymity of the quasi-identifiers, identifying values in the tables
    (``values``: per table, its radiomics value columns, not inspected)."""
    check_k_anonymity(clinical, config.privacy.quasi_identifiers, config.privacy.k)
    uid_root = deid_settings.uid_root if deid_settings.enabled else None
    findings = [f for name, df in tables.items() for f in find_identifying(df, name, deid_settings.prefix, uid_root,
                                                                               (values or {}).get(name, ()))]
    if findings:
        raise PrivacyError(
            f"release refused: {len(findings)} identifying value(s) found:\n  " + "\n  ".join(findings[:30])
        )


def _write(tmp: Path, config: ReleaseConfig, version: str, releases: Path, features: Path, frel: pd.DataFrame,
           crel: pd.DataFrame, clinical: pd.DataFrame, schema, excluded: dict) -> tuple[dict, list[str]]:
    """Step 4: the tables, data dictionary and README into ``tmp``; returns the manifest (not written yet) and
    the schema changes since the previous version."""
    features_dir = features if features.is_dir() else features.parent
    released = {FEATURES: frel, CLINICAL: crel}
    for f, df in released.items():
        write_parquet(tmp / f, df)
    prov = read_provenance(features_dir)
    settings = extraction_settings(prov)
    ddict = build_dictionary(frel, crel, schema, features_dir, config.privacy.age_band_years,
                             {k: v.description or f"Days from {v.start} to {v.end}" for k, v in config.intervals.items()})
    write_csv(tmp / "data_dictionary.csv", ddict)
    write_text(tmp / "data_dictionary.md", dictionary_markdown(ddict, settings))

    tables = {f: {"rows": len(df), "n_columns": df.shape[1], "columns": table_schema(df)} for f, df in released.items()}
    previous = [v for v in existing_versions(releases, config.name) if parse_version(v) < parse_version(version)]
    changes: list[str] = []
    sc: dict = {"previous_version": None, "changes": []}
    if previous:
        old = json.loads((releases / f"{config.name}-{previous[-1]}" / MANIFEST).read_text(encoding="utf-8"))
        changes = schema_changes(old.get("tables", {}), tables)
        sc = {"previous_version": previous[-1], "changes": changes}
    manifest = {
        "name": config.name,
        "version": version,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": software_versions(),
        "extraction": {
            "versions": prov.get("versions", {}),
            "params": {k: {"name": v["name"], "param_hash": v["param_hash"]} for k, v in settings.items()},
        },
        "config_hashes": {
            "release_config": sha256_json(config.model_dump(mode="json")),
            "clinical_schema": None if schema is None else sha256_json(schema.model_dump(mode="json")),
            "extraction_params": {k: v["param_hash"] for k, v in settings.items()},
        },
        "inputs": {"features_wide_sha256": sha256_file(features_dir / WIDE_TABLE if features.is_dir() else features)},
        "cohort": {
            "definition": config.cohort,
            "n_patients": int(crel["patient_id"].nunique()),
            "centres": {} if "centre" not in clinical.columns else {str(k): int(v) for k, v in clinical["centre"].astype(
                "string").fillna("<missing>").value_counts().sort_index().items()},
            "modalities": {str(k): int(v) for k, v in frel["modality"].value_counts().sort_index().items()},
            "rois": sorted(map(str, frel["roi"].unique())),
            "features_selection": config.features.model_dump(mode="json"),
            "clinical_variables": list(config.clinical_variables),
            "excluded": excluded,
        },
        "privacy": {
            "k": config.privacy.k,
            "quasi_identifiers": list(config.privacy.quasi_identifiers),
            "identifier_scan": "biomarkers.deid.scan.find_identifying_values + original-id scan of every file",
        },
        "tables": tables,
        "schema_changes": sc,
    }
    manifest["files"] = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size}
                         for f in RELEASE_FILES if f != "README.md"}
    write_text(tmp / "README.md", _readme(config, version, manifest))
    manifest["files"]["README.md"] = {"sha256": sha256_file(tmp / "README.md"), "bytes": (tmp / "README.md").stat().st_size}
    return manifest, changes


def _publish(tmp: Path, final: Path, name: str, version: str) -> None:
    """Step 5: make the files read-only and rename the folder into place (never over an existing version)."""
    for f in tmp.iterdir():
        os.chmod(f, 0o444)  # read-only: releases are immutable
    os.chmod(tmp, 0o755)
    if final.exists():
        raise ReleaseExistsError(f"{final}: release {name} {version} appeared during the build; not overwritten")
    try:
        os.rename(tmp, final)
    except OSError as err:  # another build renamed the same version into place first
        raise ReleaseExistsError(f"{final}: release {name} {version} already exists ({err.strerror}); not overwritten") from None


def write_archive(folder: Path) -> Path:
    """``<folder>.tar.gz`` (sorted members, fixed owner) and ``<folder>.tar.gz.sha256``."""
    dest = folder.with_name(folder.name + ".tar.gz")
    if dest.exists():
        raise ReleaseExistsError(f"{dest}: archive already exists; not overwritten")

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with atomic_path(dest) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for f in sorted(folder.iterdir()):
                tar.add(f, arcname=f"{folder.name}/{f.name}", filter=clean)
    os.chmod(dest, 0o444)
    write_text(dest.with_name(dest.name + ".sha256"), f"{sha256_file(dest)}  {dest.name}\n")
    return dest


def log_release(result: ReleaseResult, config: ReleaseConfig, tracking_uri: str | None = None) -> str:
    """Log the release to MLflow (through :mod:`biomarkers.tracking.agent`'s run functions, in this process):
    both tables as datasets (digest = file SHA-256 prefix), the folder as artifacts."""
    import time

    from ..tracking import RunKind, run_tags
    from ..tracking import tracking_uri as resolve_uri
    from ..tracking.agent import finish_run, open_run

    m, release = result.manifest, f"{result.name}-{result.version}"
    job = {"uri": resolve_uri(tracking_uri), "experiment": config.mlflow_experiment, "run_name": release,
           "start_time_ms": int(time.time() * 1000), "tags": run_tags(RunKind.RELEASE, {
               "biomarkers.stage": "release",
               "biomarkers.release.manifest_sha256": sha256_file(result.path / MANIFEST),
               "biomarkers.release.schema_changes": str(len(result.schema_changes))})}
    job["run_id"] = open_run(job)
    finish_run({**job, "params": {
        "release.name": result.name, "release.version": result.version, "privacy.k": config.privacy.k,
        "cohort.n_patients": m["cohort"]["n_patients"], "features.rows": m["tables"][FEATURES]["rows"],
        "features.columns": m["tables"][FEATURES]["n_columns"]},
        "datasets": [{"table_path": result.path / f, "name": f"{release}-{f.split('.')[0]}", "context": context,
                      "digest": m["files"][f]["sha256"][:32]}
                     for f, context in ((FEATURES, "release-features"), (CLINICAL, "release-clinical"))],
        "artifacts": [[str(result.path), f"release/{release}"]]})
    return job["run_id"]
