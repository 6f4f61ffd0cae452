"""Site bundles: what may leave a hospital, listed with checksums and signed with the site's key.

``biomarkers contribute OUT --site SITE --out BUNDLE`` turns a pipeline output folder
(``biomarkers run``: ``OUT/features``, ``OUT/dataset``, ``OUT/clinical``, optional ``OUT/qc``) into
a bundle folder::

    BUNDLE/bundle.json                 manifest: site, creation time (UTC), definitions, tables, every file's SHA-256 + size
    BUNDLE/bundle.json.sig             Ed25519 signature of the exact bytes of bundle.json (base64)
    BUNDLE/tables/features_long.parquet
    BUNDLE/tables/features_wide.parquet
    BUNDLE/tables/manifest.parquet     de-identified ingest manifest (relative image/mask paths only)
    BUNDLE/tables/clinical.parquet     pseudonymised clinical table
    BUNDLE/provenance/extraction.json  extraction provenance (library versions, parameter files, item hashes; no paths of the site)
    BUNDLE/provenance/params/<name>.yaml   the parameter files as used
    BUNDLE/provenance/clinical_schema.yaml + software.json
    BUNDLE/qc/...                      QC summary files of OUT/qc (json/csv/parquet/tsv/txt outside thumbs/: report.json,
                                       assets/runs.json), when present; with --with-images the whole QC page
    BUNDLE/images/, BUNDLE/masks/      NIfTI images, sidecars and masks (only with --with-images)
    BUNDLE/scan.json                   the PHI scan of every file above (must be empty to be accepted)

``bundle_id`` = the first 32 hex digits of the SHA-256 of ``bundle.json``: a bundle is immutable.
The lake verifies (:func:`verify_bundle`) the signature against the site's registered keys,
every checksum, that no file is unlisted, and scans the content again itself
(:func:`scan_bundle`), refusing any finding.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..features.naming import LONG_TABLE, WIDE_TABLE, value_columns
from ..manifest import MANIFEST_FILE
from .keys import check_site, fingerprint, load_private_key, verify

FORMAT = "biomarkers-bundle/1"
MANIFEST = "bundle.json"
SIGNATURE = "bundle.json.sig"
SCAN = "scan.json"
#: bundle table name -> file in the pipeline output folder
SOURCES = {
    "features_long": f"features/{LONG_TABLE}",
    "features_wide": f"features/{WIDE_TABLE}",
    "manifest": f"dataset/{MANIFEST_FILE}",
    "clinical": "clinical/clinical.parquet",
}
QC_SUFFIXES = (".json", ".csv", ".parquet", ".tsv", ".txt")
_ABS_PATH = re.compile(r"^\s*(/|~[/\\]|[A-Za-z]:[\\/]|\\\\)[^\s]*[/\\]")


class BundleRefused(InputError):
    """A bundle the lake does not accept; ``reasons`` lists every problem found."""

    def __init__(self, bundle: str, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__(f"{bundle}: bundle refused:\n  - " + "\n  - ".join(self.reasons))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# ----------------------------------------------------------------------------- definitions
def schema_definitions(schema) -> dict:
    """The clinical part of a bundle's definitions: canonical variables, join, and their version.

    ``schema_version`` = first 16 hex of the SHA-256 of the canonical JSON of ``variables`` +
    ``join``. The ``centres`` section (how each site's export names its columns) and the
    ``deid`` section are site-specific and not compared.
    """
    d = schema.model_dump(mode="json")
    core = {"variables": d["variables"], "join": d["join"]}
    return {"schema_version": hashlib.sha256(_canonical(core).encode()).hexdigest()[:16], **core}


def table_definitions(clinical) -> dict:
    """The clinical part of the definitions when no schema is given (``contribute`` without ``--schema``):
    the clinical table's columns and dtypes, ``schema_version`` from them (``source: table``)."""
    core = {"variables": {str(c): {"dtype": str(t)} for c, t in clinical.dtypes.items() if c != "patient_id"},
            "source": "table"}
    return {"schema_version": hashlib.sha256(_canonical(core).encode()).hexdigest()[:16], **core}


def feature_definitions(provenance: dict) -> dict:
    """Feature definitions from an extraction ``provenance.json``: parameter files per modality
    (name, parameter hash, content) and the extractor library versions."""
    params = {}
    for p in provenance.get("params", []):
        params[str(p.get("modality") or p.get("name"))] = {
            "name": p.get("name"), "param_hash": p.get("param_hash"), "params": p.get("params")}
    return {"params": params, "versions": dict(provenance.get("versions", {}))}


def compare_definitions(lake: dict, bundle: dict, prefix: str = "") -> list[str]:
    """Every difference between two definition dicts, one line each (``key: lake X, bundle Y``)."""
    out: list[str] = []
    for k in sorted(set(lake) | set(bundle), key=str):
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in bundle:
            out.append(f"{key}: in the lake ({_short(lake[k])}), missing in the bundle")
        elif k not in lake:
            out.append(f"{key}: new in the bundle ({_short(bundle[k])}), not in the lake")
        elif isinstance(lake[k], dict) and isinstance(bundle[k], dict):
            out.extend(compare_definitions(lake[k], bundle[k], key))
        elif lake[k] != bundle[k]:
            out.append(f"{key}: lake {_short(lake[k])}, bundle {_short(bundle[k])}")
    return out


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 120 else s[:117] + "..."


# ----------------------------------------------------------------------------- PHI scan
@dataclass(frozen=True)
class ScanFinding:
    file: str
    column: str
    row: int
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason} (row {self.row})" if self.row >= 0 else f"{self.file}: {self.reason}"


def _path_findings(name: str, values, column: str) -> list[ScanFinding]:
    out = []
    for i, v in values:
        if isinstance(v, str) and _ABS_PATH.match(v):
            out.append(ScanFinding(name, column, i, "path", f"{column}: absolute file path (a site's path)"))
            if len(out) >= 5:
                break
    return out


def scan_table(df, name: str, date_columns=(), uid_root: str | None = "2.25", prefix: str | None = None
               ) -> list[ScanFinding]:
    """:func:`biomarkers.deid.scan.find_identifying_values` over each column's distinct values,
    plus absolute file paths. Dates are accepted only in ``date_columns`` (the clinical schema's
    ``type: date`` variables, shifted per patient at the site)."""
    import pandas as pd

    from ..deid.scan import find_identifying_values

    from ..deid.keys import pseudonym_pattern

    pseudonym = pseudonym_pattern(prefix)
    out: list[ScanFinding] = []
    df = df.reset_index(drop=True)
    values = value_columns(df)  # radiomics values (original_glcm_Id is GLCM's inverse difference, not an id)
    for col in df.columns:
        s = df[col]
        if str(col) in values:
            continue
        first = s.drop_duplicates()  # each distinct value once; its first row is reported
        rows = [int(i) for i in first.index]
        one = pd.DataFrame({col: first.to_numpy()}).astype({col: s.dtype})
        for f in find_identifying_values(one, uid_root=uid_root, pseudonym_pattern=pseudonym):
            if f.value_kind == "date" and str(col) in date_columns:
                continue
            out.append(ScanFinding(name, str(col), rows[f.row], f.value_kind, f.reason))
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            out.extend(_path_findings(name, zip(rows, first.tolist()), str(col)))
    return out


def _leaves(obj: Any, key: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{key}.{i}")
    elif isinstance(obj, str):
        yield key, obj


def scan_document(obj: Any, name: str) -> list[ScanFinding]:
    """Scan every text leaf of a JSON/YAML document for names, dates, e-mails, phones and paths."""
    import pandas as pd

    from ..deid.scan import find_identifying_values

    leaves = list(_leaves(obj))
    if not leaves:
        return []
    df = pd.DataFrame({"text": [v for _, v in leaves]})
    out = [ScanFinding(name, leaves[f.row][0], -1, f.value_kind, f"{leaves[f.row][0]}: {f.reason.split(': ', 1)[-1]}")
           for f in find_identifying_values(df, uid_root=None)]
    out.extend(ScanFinding(name, k, -1, "path", f"{k}: absolute file path (a site's path)")
               for k, v in leaves if _ABS_PATH.match(v))
    return out


def scan_bundle(root: str | os.PathLike, files: list[str], date_columns=(), uid_root: str | None = "2.25",
                needles: dict | None = None, prefix: str | None = None) -> list[ScanFinding]:
    """PHI scan of the listed files of a bundle (relative names): tables by the table heuristics,
    JSON/YAML by their text leaves, every file's bytes and name against ``needles`` (known
    identifying values, see :func:`biomarkers.deid.scan.scan_files`) when given."""
    import pandas as pd
    import yaml

    root = Path(root)
    out: list[ScanFinding] = []
    for rel in files:
        p = root / rel
        low = rel.lower()
        try:
            if low.endswith(".parquet"):
                out.extend(scan_table(pd.read_parquet(p), rel, date_columns, uid_root, prefix))
            elif low.endswith((".csv", ".tsv")):
                out.extend(scan_table(pd.read_csv(p, sep="\t" if low.endswith(".tsv") else ",", dtype=str),
                                      rel, date_columns, uid_root, prefix))
            elif low.endswith(".json"):
                out.extend(scan_document(json.loads(p.read_text(encoding="utf-8")), rel))
            elif low.endswith((".yaml", ".yml")):
                out.extend(scan_document(yaml.safe_load(p.read_text(encoding="utf-8")), rel))
        except (ValueError, OSError, yaml.YAMLError) as err:
            out.append(ScanFinding(rel, "", -1, "unreadable", f"cannot be read for the identifier scan ({err})"))
    if needles:
        from ..deid.scan import scan_files

        for h in scan_files([root / f for f in files], needles):
            out.append(ScanFinding(str(h.path), "", -1, "needle", f"known identifying value {h.label!r} ({h.layer})"))
    return out


# ----------------------------------------------------------------------------- site side
@dataclass
class BundleResult:
    path: Path
    bundle_id: str
    site: str
    files: int
    bytes: int
    counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"bundle {self.bundle_id} of site {self.site}: {self.files} files, {self.bytes / 1e6:.1f} MB "
                f"({c}) -> {self.path}")


def _sanitised_provenance(prov: dict) -> dict:
    """Extraction provenance without the site's absolute paths (parameter files keep their name)."""
    prov = json.loads(json.dumps(prov))
    for p in prov.get("params", []):
        if p.get("path"):
            p["file"] = Path(str(p.pop("path"))).name
    prov.pop("dataset", None)
    return prov


def load_schema_for_bundle(path: str | os.PathLike):
    """A :class:`~biomarkers.clinical.schema.ClinicalSchema` from a schema YAML, or from a pipeline
    config YAML's ``clinical.schema`` (inline, or a file relative to the config)."""
    from ..clinical.schema import ClinicalSchema
    from ..config import read_yaml, validate

    p = Path(path)
    data = read_yaml(p)
    if isinstance(data, dict) and isinstance(data.get("clinical"), dict) and "variables" not in data:
        s = data["clinical"].get("schema")
        if isinstance(s, str):
            sp = Path(s) if Path(s).is_absolute() else p.parent / s
            return validate(ClinicalSchema, read_yaml(sp), str(sp))
        return validate(ClinicalSchema, s, f"{p}: clinical.schema")
    return validate(ClinicalSchema, data, str(p))


def software_versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("biomarkers", "pyradiomics-bhklab", "SimpleITK", "numpy", "PyWavelets", "pandas", "pyarrow",
                "pydicom", "nibabel", "cryptography"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def build_bundle(out: str | os.PathLike, site: str, bundle: str | os.PathLike, key: str | os.PathLike,
                 schema: str | os.PathLike | None = None, with_images: bool = False,
                 needles: dict | None = None) -> BundleResult:
    """Package the pipeline output ``out`` of ``site`` into the bundle folder ``bundle``, signed with ``key``.

    Refused (ConfigError/InputError, nothing written) when a table is missing, the key is not a
    private Ed25519 key of mode 0600, or the PHI scan of the bundle finds anything (the bundle
    would then be refused by the lake too: fix the source and rerun the pipeline).
    """
    import pandas as pd
    import yaml

    from ..io import write_parquet

    check_site(site)
    out, dest = Path(out), Path(bundle)
    if dest.exists():
        raise ConfigError(f"{dest}: already exists; a bundle is immutable, give a new --out")
    private = load_private_key(key)
    missing = [rel for rel in (*SOURCES.values(), "features/provenance.json") if not (out / rel).is_file()]
    if missing:
        raise InputError(f"{out}: not a complete pipeline output (missing {', '.join(missing)}); "
                         "run `biomarkers run CONFIG.yaml` first")
    sch = load_schema_for_bundle(schema) if schema is not None else None
    provenance = json.loads((out / "features/provenance.json").read_text(encoding="utf-8"))
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tables: dict[str, dict] = {}
        for name, rel in SOURCES.items():
            df = pd.read_parquet(out / rel)
            write_parquet(tmp / "tables" / f"{name}.parquet", df)
            tables[name] = {"path": f"tables/{name}.parquet", "rows": int(len(df))}
        clinical = pd.read_parquet(out / SOURCES["clinical"], columns=["patient_id"])
        wide = pd.read_parquet(out / SOURCES["features_wide"], columns=["patient_id"])
        prov = _sanitised_provenance(provenance)
        (tmp / "provenance" / "params").mkdir(parents=True)
        (tmp / "provenance" / "extraction.json").write_text(json.dumps(prov, indent=1, sort_keys=True))
        for p in prov.get("params", []):
            (tmp / "provenance" / "params" / f"{p['name']}.yaml").write_text(
                yaml.safe_dump(p.get("params"), sort_keys=False))
        if sch is not None:
            (tmp / "provenance" / "clinical_schema.yaml").write_text(
                yaml.safe_dump(sch.model_dump(mode="json"), sort_keys=False))
        (tmp / "provenance" / "software.json").write_text(json.dumps(software_versions(), indent=1, sort_keys=True))
        qc = out / "qc"
        if qc.is_dir():
            for p in sorted(qc.rglob("*")):
                summary = p.suffix.lower() in QC_SUFFIXES and p.relative_to(qc).parts[0] != "thumbs"
                if p.is_file() and (with_images or summary):
                    t = tmp / "qc" / p.relative_to(qc)
                    t.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, t)
        if with_images:
            for sub in ("images", "masks"):
                if (out / "dataset" / sub).is_dir():
                    shutil.copytree(out / "dataset" / sub, tmp / sub)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        dates = [k for k, v in sch.variables.items() if v.type == "date"] if sch is not None else []
        uid_root, prefix = (sch.deid.uid_root, sch.deid.prefix) if sch is not None else ("2.25", None)
        findings = scan_bundle(tmp, files, dates, uid_root, needles, prefix)
        if findings:
            raise BundleRefused(str(out), [str(f) for f in findings[:50]])
        (tmp / SCAN).write_text(json.dumps({"scanned_files": len(files), "findings": [], "needles": len(needles or {}),
                                            "scanner": "biomarkers.deid.scan.find_identifying_values + paths"},
                                           indent=1))
        files.append(SCAN)
        listing = [{"path": f, "sha256": _sha256(tmp / f), "size": (tmp / f).stat().st_size} for f in sorted(files)]
        counts = {"patients": int(wide["patient_id"].nunique()), "clinical_rows": int(len(clinical)),
                  **{f"{k}_rows": v["rows"] for k, v in tables.items() if k != "clinical"}}
        manifest = {
            "format": FORMAT,
            "site": site,
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "key_fingerprint": fingerprint(private.public_key()),
            "with_images": bool(with_images),
            "definitions": {"features": feature_definitions(provenance),
                            "clinical": schema_definitions(sch) if sch is not None else table_definitions(
                                pd.read_parquet(out / SOURCES["clinical"]))},
            "date_columns": dates,
            "uid_root": uid_root,
            "pseudonym_prefix": prefix,
            "software": software_versions(),
            "tables": tables,
            "counts": counts,
            "files": listing,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        (tmp / MANIFEST).write_bytes(data)
        (tmp / SIGNATURE).write_text(base64.b64encode(private.sign(data)).decode() + "\n")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BundleResult(dest, bundle_id(data), site, len(listing) + 2, sum(f["size"] for f in listing) + len(data),
                        counts)


def bundle_id(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()[:32]


# ----------------------------------------------------------------------------- central side
@dataclass
class Bundle:
    """A bundle folder as read by the lake (nothing verified yet: see :func:`verify_bundle`)."""

    path: Path
    raw: bytes
    manifest: dict
    signature: bytes | None

    @property
    def bundle_id(self) -> str:
        return bundle_id(self.raw)

    @property
    def site(self) -> str:
        return str(self.manifest.get("site", ""))

    @property
    def definitions(self) -> dict:
        return self.manifest.get("definitions", {})

    def table_path(self, name: str) -> Path:
        return self.path / self.manifest["tables"][name]["path"]


def open_bundle(path: str | os.PathLike) -> Bundle:
    """Read ``bundle.json`` (and its signature if present) of the bundle folder ``path``."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise BundleRefused(str(p), [f"no {MANIFEST}: not a bundle folder (make one with `biomarkers contribute`)"])
    raw = (p / MANIFEST).read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise BundleRefused(str(p), [f"{MANIFEST} is not valid JSON ({err})"]) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleRefused(str(p), [f"{MANIFEST}: format is not {FORMAT!r}"])
    sig = None
    if (p / SIGNATURE).is_file():
        try:
            sig = base64.b64decode((p / SIGNATURE).read_text().strip(), validate=True)
        except (ValueError, UnicodeDecodeError):
            sig = b""
    return Bundle(p, raw, manifest, sig)


def verify_bundle(b: Bundle, public_keys: list) -> None:
    """Signature (against any of ``public_keys``), every checksum and size, no unlisted file, and a
    fresh PHI scan: raises :class:`BundleRefused` with every reason, else returns None."""
    where = str(b.path)
    site = b.site
    if b.signature is None:
        raise BundleRefused(where, [f"unsigned bundle: {SIGNATURE} is missing (bundles are signed by "
                                    "`biomarkers contribute` with the site's private key)"])
    if not public_keys:
        raise BundleRefused(where, [f"site {site!r} is not registered in this lake: register its public key with "
                                    f"`biomarkers lake register LAKE --site {site} --key {site}.pub`"])
    if not any(verify(k, b.signature, b.raw) for k in public_keys):
        fps = ", ".join(fingerprint(k) for k in public_keys)
        raise BundleRefused(where, [f"signature does not verify with the registered key(s) of site {site!r} ({fps}): "
                                    f"{MANIFEST} was changed after signing, or signed with another key"])
    reasons: list[str] = []
    listed = {}
    for f in b.manifest.get("files", []):
        rel = str(f.get("path", ""))
        if rel.startswith("/") or ".." in Path(rel).parts:
            reasons.append(f"{rel}: file name outside the bundle")
            continue
        listed[rel] = f
        p = b.path / rel
        if not p.is_file():
            reasons.append(f"{rel}: listed in {MANIFEST} but missing")
        elif p.stat().st_size != f.get("size"):
            reasons.append(f"{rel}: size {p.stat().st_size} != {f.get('size')} in {MANIFEST} (file changed)")
        elif _sha256(p) != f.get("sha256"):
            reasons.append(f"{rel}: SHA-256 checksum mismatch (file changed after signing)")
    present = {p.relative_to(b.path).as_posix() for p in b.path.rglob("*") if p.is_file()} - {MANIFEST, SIGNATURE}
    for rel in sorted(present - set(listed)):
        reasons.append(f"{rel}: file not listed in the signed {MANIFEST}")
    for name in SOURCES:
        t = b.manifest.get("tables", {}).get(name)
        if not isinstance(t, dict):
            reasons.append(f"table {name} missing from {MANIFEST}")
        elif t.get("path") not in listed:
            reasons.append(f"table {name}: {t.get('path')!r} is not a listed (checksummed) file")
    if reasons:
        raise BundleRefused(where, reasons)
    reasons = check_keys(b)
    if reasons:
        raise BundleRefused(where, reasons)
    findings = scan_bundle(b.path, sorted(set(listed) - {SCAN}), b.manifest.get("date_columns", []),
                           b.manifest.get("uid_root", "2.25"), prefix=b.manifest.get("pseudonym_prefix"))
    if findings:
        raise BundleRefused(where, [f"identifier scan: {f}" for f in findings[:50]])


#: rows are keyed by (site, these columns); a bundle is one site's
KEYS = {"clinical": ["patient_id"], "features_wide": ["patient_id", "series_uid", "roi"]}


def check_keys(b: Bundle) -> list[str]:
    """Reasons to refuse: a missing key column, an empty key, or a key repeated in a table
    (rows are keyed by (site, patient): one clinical row per patient, one wide row per patient x series x ROI)."""
    import pandas as pd

    reasons = []
    for name, cols in KEYS.items():
        try:
            df = pd.read_parquet(b.table_path(name), columns=cols)
        except (ValueError, KeyError, OSError) as err:
            reasons.append(f"table {name}: key columns {cols} cannot be read ({err})")
            continue
        if df.isna().any(axis=None):
            reasons.append(f"table {name}: {int(df.isna().any(axis=1).sum())} row(s) without {'/'.join(cols)}")
        dup = df.index[df.duplicated(keep=False)]
        if len(dup):  # rows, not the key values: a refused bundle has not been scanned yet
            reasons.append(f"table {name}: key ({', '.join(cols)}) repeated in {len(dup)} rows "
                           f"(rows {', '.join(str(int(i)) for i in dup[:10])}{', ...' if len(dup) > 10 else ''})")
    return reasons
