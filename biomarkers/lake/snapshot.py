"""``biomarkers lake snapshot``: a partner release of one lake version, built by the release builder.

The live rows of lake version N (features wide + long, clinical) are written to a temporary
FEATURES folder with the extraction provenance and clinical schema of the latest live bundle,
then :func:`biomarkers.release.build_release` selects, checks (identifier scan, k-anonymity),
documents and writes the release exactly as ``biomarkers release`` does. The clinical table
is the lake's (pseudonymised at the sites); it keeps a ``site`` column that the release config
may list in ``clinical_variables`` or ``privacy.quasi_identifiers``. The release description
names the lake version and digest (never the lake's path).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import InputError
from .store import PARTITIONS, Lake


def snapshot(lake: Lake, version: int, config, releases_dir, release_version: str | None = None,
             tracking_uri=None, archive: bool = False):
    """Build a release of lake ``version`` with release config ``config`` (path or ReleaseConfig)."""
    import pandas as pd
    import yaml

    from ..clinical.schema import ClinicalSchema
    from ..config import validate
    from ..features.naming import LONG_TABLE, WIDE_TABLE
    from ..io import write_json, write_parquet
    from ..release import build_release, load_release_config

    v = lake._check_version(version)
    config_path = Path(config) if isinstance(config, (str, Path)) else None
    cfg = load_release_config(config) if config_path is not None else config
    ledger = lake.ledger(v)
    live = ledger[ledger["live"]].sort_values("lake_version")
    if live.empty:
        raise InputError(f"{lake.uri}@{v}: the lake has no bundle in this version; nothing to release")
    wide, long = lake.read("features_wide", v), lake.read("features_long", v)
    clinical = lake.read("clinical", v).drop(columns=["bundle_id"])
    dup = clinical.loc[clinical["patient_id"].duplicated(), "patient_id"].tolist()
    if dup:
        raise InputError(f"{lake.uri}@{v}: the same pseudonym at several sites ({dup[:5]}); cannot release")
    last = live.iloc[-1]
    prov = json.loads(lake.read_object(last["site"], last["bundle_id"], "provenance/extraction.json"))
    schema = None  # a bundle made without --schema carries the clinical table's columns only
    listed = {f["path"] for f in json.loads(lake.read_object(last["site"], last["bundle_id"], "bundle.json"))["files"]}
    if "provenance/clinical_schema.yaml" in listed:
        schema_data = yaml.safe_load(lake.read_object(last["site"], last["bundle_id"], "provenance/clinical_schema.yaml"))
        schema = validate(ClinicalSchema, schema_data, f"bundle {last['bundle_id']}: provenance/clinical_schema.yaml")
    cfg = cfg.model_copy(update={"description": (cfg.description or "").rstrip()
                                 + f" Built from lake version {v} ({lake.digest(v)}); sites: "
                                 + ", ".join(sorted(live["site"])) + "."})
    with tempfile.TemporaryDirectory(prefix="lake-snapshot-") as tmp:
        features = Path(tmp) / "features"
        write_parquet(features / WIDE_TABLE, wide.drop(columns=PARTITIONS))
        write_parquet(features / LONG_TABLE, long.drop(columns=PARTITIONS))
        write_json(features / "provenance.json", prov)
        return build_release(features, pd.DataFrame(clinical), cfg, releases_dir, version=release_version,
                             archive=archive, schema=schema, config_path=config_path, tracking_uri=tracking_uri)
