"""The central lake: Delta Lake tables that grow by verified site bundles, with versions and time travel.

Layout of ``LAKE`` (a local folder, or ``s3://bucket/prefix`` through delta-rs' object store)::

    LAKE/bundles/         ledger (Delta, change data feed on): one row per accepted bundle. Its Delta
                          version IS the lake version: 0 after ``lake init``, +1 per accepted bundle
    LAKE/sites/           registered site public keys (Delta)
    LAKE/features_long/   rows of every accepted bundle, partitioned by (site, bundle_id)
    LAKE/features_wide/   ...
    LAKE/clinical/        ...
    LAKE/manifest/        ...
    LAKE/objects/<site>/<bundle_id>/   the bundle's signed bundle.json + signature, provenance, QC
                          summary, scan result (and images/masks when the bundle has them)

How an add works (:meth:`Lake.add`): the bundle is verified (signature against the site's
registered keys, checksums, unlisted files, identifier scan) and compared with the lake's
definitions (those of the last accepted bundle); its rows are written to each table's
``(site, bundle_id)`` partition (an overwrite of that partition only, so a retry after a crash
writes the same rows again, never twice); then one ledger row is inserted with a Delta MERGE
on ``bundle_id``, the commit point. Delta's optimistic concurrency control rejects the second
of two MERGEs that read the same ledger version ("a concurrent transaction added new data");
the add then re-reads the ledger and retries, and a bundle already there is not added again.
Data-table writes of different bundles touch different partitions and do not conflict.

Which rows a version holds: for each site, the rows of its *live* bundle, the one with the
latest site creation time (``created``, signed); older bundles of the site are superseded and
their rows are kept (history). Each ledger row records the data-table versions after its
writes; reading lake version N reads each data table at the largest version recorded in
ledger version N, restricted to the bundles live in N, so an earlier version is reproduced
exactly, whatever was added since.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..features.naming import KEY_COLUMNS, NAME_COLUMNS
from .bundle import MANIFEST, SIGNATURE, Bundle, BundleRefused, compare_definitions, open_bundle, verify_bundle
from .keys import check_site, fingerprint, load_public_key, public_pem

TABLES = ("features_long", "features_wide", "clinical", "manifest")
LEDGER = "bundles"
SITES = "sites"
PARTITIONS = ["site", "bundle_id"]
RETRIES = 50
#: Delta table properties of every lake table: every version stays readable (no expired-log cleanup,
#: which delta-rs would otherwise run after 30 days at a checkpoint), a checkpoint every 10 commits
#: (opening a table replays at most 10 commit files).
TABLE_CONFIG = {"delta.enableExpiredLogCleanup": "false", "delta.logRetentionDuration": "interval 36500 days",
                "delta.checkpointInterval": "10"}
#: columns of the ledger table (one row per accepted bundle)
LEDGER_COLUMNS = ("bundle_id", "site", "created", "added_at", "key_fingerprint", "patients", "with_images",
                  "definitions", "schema_change", "table_versions", "counts", "manifest", "signature")


def parse_lake_ref(ref: str) -> tuple[str, int | None]:
    """``"LAKE@3"`` -> ``("LAKE", 3)``; ``"LAKE"`` -> ``("LAKE", None)`` (latest version)."""
    ref = str(ref)
    head, sep, tail = ref.rpartition("@")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    if sep and head and not tail.isdigit() and "/" not in tail:
        raise ConfigError(f"lake reference {ref!r}: the version after '@' must be a whole number (LAKE@VERSION)")
    return ref, None


@dataclass
class AddResult:
    """What ``lake add`` did with one bundle."""

    bundle_id: str
    site: str
    status: str  # added | unchanged
    version: int  # the lake version after the add (or the current one when unchanged)
    superseded: list[str] = field(default_factory=list)
    schema_change: list[str] = field(default_factory=list)
    retries: int = 0
    live: bool = True  # False: the site already has a bundle created later (this one goes to the history)

    def summary(self) -> str:
        if self.status == "unchanged":
            return f"bundle {self.bundle_id} of site {self.site} is already in the lake: nothing changed (version {self.version})"
        s = f"bundle {self.bundle_id} of site {self.site} added: lake version {self.version}"
        if self.superseded:
            s += f"; supersedes {', '.join(self.superseded)} (kept in the history)"
        if not self.live:
            s += "; NOT live: the site has a bundle created later, which stays its current one (this one is history)"
        if self.schema_change:
            s += f"; accepted with --allow-schema-change ({len(self.schema_change)} difference(s))"
        return s


class Lake:
    """A datalake at ``uri`` (local folder or object-store URI; ``storage_options`` go to delta-rs).

    ``Lake.init(uri)`` creates one; ``Lake(uri)`` opens an existing one (InputError otherwise).
    """

    def __init__(self, uri: str | os.PathLike, storage_options: dict | None = None):
        self.uri = _normalise(uri)
        self.storage_options = storage_options
        if not self._exists(LEDGER):
            raise InputError(f"{self.uri}: not a lake (no {LEDGER} table); create one with `biomarkers lake init {uri}`")

    # ------------------------------------------------------------------ creation, sites
    @classmethod
    def init(cls, uri: str | os.PathLike, storage_options: dict | None = None) -> "Lake":
        import pyarrow as pa
        from deltalake import DeltaTable

        u = _normalise(uri)
        probe = object.__new__(cls)
        probe.uri, probe.storage_options = u, storage_options
        if probe._exists(LEDGER):
            raise ConfigError(f"{u}: a lake already exists here")
        if "://" not in u:
            Path(u).mkdir(parents=True, exist_ok=True)
        DeltaTable.create(probe._path(SITES), _sites_schema(pa), partition_by=["site"], storage_options=storage_options,
                          configuration=TABLE_CONFIG)
        DeltaTable.create(probe._path(LEDGER), _ledger_schema(pa), storage_options=storage_options,
                          name="biomarkers-lake", description="biomarkers datalake ledger (one row per accepted bundle)",
                          configuration={**TABLE_CONFIG, "delta.enableChangeDataFeed": "true"})
        return cls(u, storage_options)

    def register(self, site: str, public_key: bytes | str, source: str = "<public key>") -> str:
        """Register a site's Ed25519 public key (PEM); returns its fingerprint. Registering the same
        key again changes nothing; a second key of a site is added (key rotation: both verify)."""
        import pyarrow as pa

        check_site(site)
        key = load_public_key(public_key, source)
        fp = fingerprint(key)
        row = pa.table({"site": [site], "fingerprint": [fp], "public_key": [public_pem(key)],
                        "registered_at": [_now()]}, schema=_sites_schema(pa))
        self._merge(SITES, row, "t.site = s.site AND t.fingerprint = s.fingerprint")
        return fp

    def sites(self):
        """Registered keys: DataFrame ``site, fingerprint, public_key, registered_at``."""
        return self._table(SITES).to_pandas()

    def site_keys(self, site: str) -> list:
        """The registered public keys of ``site`` (read from its partition of the sites table only)."""
        check_site(site)
        t = self._table(SITES).to_pyarrow_table(filters=[("site", "=", site)], columns=["public_key"])
        return [load_public_key(p, f"{self.uri}/{SITES}") for p in t.column("public_key").to_pylist()]

    # ------------------------------------------------------------------ versions, ledger
    def version(self) -> int:
        """The current lake version (the ledger's Delta version)."""
        return int(self._table(LEDGER).version())

    def ledger(self, version: int | None = None, full: bool = False):
        """The ledger at ``version``: one row per accepted bundle (without the signed ``manifest`` and
        ``signature`` texts unless ``full``), plus ``lake_version`` (the version that added it) and
        ``live`` (its rows are the site's current rows in that version).

        Read from Delta's change data feed: the ledger only ever receives inserts, so the inserts up
        to ``version`` are its rows, each with the version that committed it (one read of the feed).
        """
        import pandas as pd
        import pyarrow as pa

        t = self._table(LEDGER, version)
        v = t.version()
        cols = [c for c in LEDGER_COLUMNS if full or c not in ("manifest", "signature")]
        if v == 0:
            df = pa.table({c: pa.array([], _ledger_schema(pa).field(c).type) for c in cols}).to_pandas()
            df["lake_version"] = pd.Series([], dtype="Int64")
        else:
            cdf = pa.table(t.load_cdf(starting_version=1, ending_version=v,
                                      columns=cols + ["_change_type", "_commit_version"])).to_pandas()
            df = cdf[cdf["_change_type"] == "insert"].drop(columns=["_change_type"])
            df = df.rename(columns={"_commit_version": "lake_version"}).drop_duplicates("bundle_id")
            df["lake_version"] = df["lake_version"].astype("Int64")
        df["live"] = df["bundle_id"].isin(live_bundles(df))
        return df.sort_values(["lake_version", "bundle_id"]).reset_index(drop=True)

    def _check_version(self, version: int | None) -> int:
        cur = self.version()
        if version is None:
            return cur
        if not (0 <= int(version) <= cur):
            raise InputError(f"{self.uri}: version {version} does not exist (versions 0..{cur})")
        return int(version)

    # ------------------------------------------------------------------ add
    def add(self, path: str | os.PathLike, allow_schema_change: bool = False) -> AddResult:
        """Verify and add one bundle folder (see the module docstring); BundleRefused when refused."""
        import pandas as pd

        b = open_bundle(path)
        try:
            check_site(b.site)
        except ConfigError as err:
            raise BundleRefused(str(b.path), [str(err)]) from None
        verify_bundle(b, self.site_keys(b.site))
        bid = b.bundle_id
        retries = 0
        ledger = self.ledger()
        if bid in set(ledger["bundle_id"]):
            return AddResult(bid, b.site, "unchanged", self.version())
        diff = self._compatibility(b, ledger, allow_schema_change)
        versions = {name: self._write_table(b, name, bool(diff)) for name in TABLES}
        self._copy_objects(b)
        row = self._ledger_row(b, versions, diff)
        while True:
            led = self._table(LEDGER)
            try:
                self._merge_into(led, row, "t.bundle_id = s.bundle_id")
                version = int(led.version())
                break
            except Exception as err:  # noqa: BLE001 - deltalake CommitFailedError: rerun, as Delta asks
                if not _is_conflict(err) or retries >= RETRIES:
                    raise
                retries += 1
                time.sleep(random.uniform(0.01, 0.05) * min(retries, 10))
                ledger = self.ledger()
                if bid in set(ledger["bundle_id"]):
                    return AddResult(bid, b.site, "unchanged", self.version(), retries=retries)
                self._compatibility(b, ledger, allow_schema_change)
        mine = ledger.loc[ledger["site"] == b.site, ["bundle_id", "site", "created"]]
        after = pd.concat([mine, pd.DataFrame([{"bundle_id": bid, "site": b.site, "created": row["created"][0].as_py()}])])
        was_live = set(ledger.loc[(ledger["site"] == b.site) & ledger["live"], "bundle_id"])
        superseded = sorted(was_live - live_bundles(after))
        return AddResult(bid, b.site, "added", version, superseded, diff, retries, live=bid in live_bundles(after))

    def _compatibility(self, b: Bundle, ledger, allow: bool) -> list[str]:
        if not len(ledger):
            return []
        last = ledger.sort_values(["lake_version"]).iloc[-1]
        diff = compare_definitions(json.loads(last["definitions"]), b.definitions)
        if diff and not allow:
            raise BundleRefused(str(b.path), [
                f"incompatible with the lake's definitions (those of bundle {last['bundle_id']} of site "
                f"{last['site']}, lake version {last['lake_version']}); what differs:"]
                + [f"    {d}" for d in diff]
                + ["give --allow-schema-change to accept it anyway (recorded in the ledger)"])
        return diff

    def _ledger_row(self, b: Bundle, versions: dict, diff: list[str]):
        import base64

        import pyarrow as pa

        m = b.manifest
        row = {
            "bundle_id": b.bundle_id, "site": b.site, "created": str(m.get("created", "")), "added_at": _now(),
            "key_fingerprint": str(m.get("key_fingerprint", "")), "patients": int(m.get("counts", {}).get("patients", 0)),
            "with_images": bool(m.get("with_images", False)),
            "definitions": json.dumps(b.definitions, sort_keys=True), "schema_change": json.dumps(diff),
            "table_versions": json.dumps(versions, sort_keys=True), "counts": json.dumps(m.get("counts", {}), sort_keys=True),
            "manifest": b.raw.decode(), "signature": base64.b64encode(b.signature or b"").decode(),
        }
        return pa.table({k: [v] for k, v in row.items()}, schema=_ledger_schema(pa))

    def _write_table(self, b: Bundle, name: str, evolve: bool) -> int:
        """Write the bundle's rows of table ``name`` into its (site, bundle_id) partition; the table version."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from deltalake import DeltaTable, write_deltalake

        data = pq.read_table(b.table_path(name))
        data = _with_partition_columns(data, b.site, b.bundle_id)
        path = self._path(name)
        for attempt in range(RETRIES + 1):
            exists = self._exists(name)
            try:
                if exists:
                    t = DeltaTable(path, storage_options=self.storage_options)
                    data_ = _align(data, pa.schema(t.schema().to_arrow()), evolve, f"{b.path}: table {name}", pa)
                    write_deltalake(t, data_, mode="overwrite", predicate=f"bundle_id = '{b.bundle_id}'",
                                    schema_mode="merge" if evolve else None)
                    t.update_incremental()
                    return int(t.version())
                write_deltalake(path, data, partition_by=PARTITIONS, mode="append", configuration=TABLE_CONFIG,
                                storage_options=self.storage_options)
                return int(DeltaTable(path, storage_options=self.storage_options).version())
            except BundleRefused:
                raise
            except Exception as err:  # noqa: BLE001
                if not _is_conflict(err) or attempt >= RETRIES:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * min(attempt + 1, 10))
        raise AssertionError("unreachable")

    def _objects(self):
        """(pyarrow filesystem, root path) of ``LAKE/objects`` (local, or the object store of the URI)."""
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(self._path("objects") if "://" in self.uri
                                        else Path(self._path("objects")).resolve().as_uri())

    def read_object(self, site: str, bundle: str, name: str) -> bytes:
        """A file of an accepted bundle kept in ``objects/`` (e.g. ``provenance/extraction.json``)."""
        fs, root = self._objects()
        try:
            with fs.open_input_stream(f"{root}/{site}/{bundle}/{name}", compression=None) as fh:
                return fh.read()
        except (FileNotFoundError, OSError) as err:
            raise InputError(f"{self.uri}: bundle {bundle} of site {site} has no file {name} ({err})") from None

    def _copy_objects(self, b: Bundle) -> None:
        """Copy the bundle's non-table files (and its signed manifest) to ``objects/<site>/<bundle_id>/``."""
        fs, root = self._objects()
        dest = f"{root}/{b.site}/{b.bundle_id}"
        fs.create_dir(dest, recursive=True)
        names = [f["path"] for f in b.manifest.get("files", []) if not f["path"].startswith("tables/")]
        for rel in [MANIFEST, SIGNATURE, *names]:
            target = f"{dest}/{rel}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(b.path / rel, "rb") as src, fs.open_output_stream(target, compression=None) as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)

    # ------------------------------------------------------------------ read
    def dataset(self, name: str, version: int | None = None, ledger=None):
        """A pyarrow dataset of table ``name``'s live rows in lake ``version`` (None: latest), or None
        when no bundle has rows there yet (``ledger``: that version's ledger, if already read)."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads
        from deltalake import DeltaTable

        if name not in TABLES:
            raise InputError(f"unknown lake table {name!r} (tables: {', '.join(TABLES)})")
        if ledger is None:
            ledger = self.ledger(self._check_version(version))
        tv = [json.loads(s).get(name) for s in ledger["table_versions"]]
        tv = [v for v in tv if v is not None]
        if not tv:
            return None
        t = DeltaTable(self._path(name), version=max(tv), storage_options=self.storage_options)
        live = sorted(ledger.loc[ledger["live"], "bundle_id"])
        d = t.to_pyarrow_dataset()
        assert isinstance(d, pads.Dataset)
        return d.filter(pc.field("bundle_id").isin(live))

    def _live_files(self, name: str, ledger) -> list[str] | None:
        """Local paths of the data files of table ``name`` holding the live rows of ``ledger``'s version,
        from the Delta log's add actions; None when DuckDB cannot read them directly as plain Parquet
        (object store, a reader feature such as deletion vectors or column mapping, or a file whose
        path does not carry the partition values the log gives): the pyarrow dataset is used then."""
        import urllib.parse

        import pyarrow as pa
        from deltalake import DeltaTable

        if "://" in self.uri:
            return None
        tv = [v for v in (json.loads(s).get(name) for s in ledger["table_versions"]) if v is not None]
        if not tv:
            return []
        t = DeltaTable(self._path(name), version=max(tv), storage_options=self.storage_options)
        p = t.protocol()
        if p.min_reader_version > 1 or p.reader_features:
            return None
        live = set(ledger.loc[ledger["live"], "bundle_id"])
        acts = pa.table(t.get_add_actions(flatten=True)).select(["path", "partition.site", "partition.bundle_id"])
        files = []
        for path, site, bid in zip(*(acts.column(i).to_pylist() for i in range(3))):
            if bid not in live:
                continue
            if not urllib.parse.unquote(path).startswith(f"site={site}/bundle_id={bid}/"):
                return None
            files.append(os.path.join(self._path(name), urllib.parse.unquote(path)))
        return files

    def read(self, name: str, version: int | None = None):
        """Table ``name`` of lake ``version`` as a DataFrame, sorted by site and key columns."""
        import pandas as pd

        d = self.dataset(name, version)
        if d is None:
            return pd.DataFrame()
        t = d.to_table()
        keys = [c for c in ("site", *KEY_COLUMNS, *NAME_COLUMNS, "kind", "path") if c in t.column_names]
        return t.sort_by([(k, "ascending") for k in keys]).to_pandas()

    def connect(self, version: int | None = None):
        """A DuckDB connection with views ``features_long, features_wide, clinical, manifest`` (live rows
        of ``version``), ``bundles`` (the ledger with ``lake_version``/``live``) and ``sites``."""
        import duckdb

        version = self._check_version(version)
        con = duckdb.connect()
        led = self.ledger(version)
        for name in TABLES:
            files = self._live_files(name, led)
            if files is not None:  # DuckDB's own Parquet reader over the version's live data files
                if files:
                    lst = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                    con.execute(f"CREATE VIEW {name} AS SELECT site, bundle_id, * EXCLUDE (site, bundle_id) "
                                f"FROM read_parquet([{lst}], hive_partitioning = true, union_by_name = true, "
                                "hive_types = {'site': VARCHAR, 'bundle_id': VARCHAR})")
                continue
            d = self.dataset(name, version, led)
            if d is not None:
                con.register(name, d)
        con.register("bundles", led)
        con.register("sites", self.sites().drop(columns=["public_key"]))
        return con

    def query(self, sql: str, version: int | None = None):
        """Run DuckDB ``sql`` over :meth:`connect`'s views; a DataFrame."""
        import duckdb

        con = self.connect(version)
        try:
            return con.execute(sql).df()
        except duckdb.Error as err:
            raise InputError(f"query failed: {err}") from None
        finally:
            con.close()

    def analysis_table(self, version: int | None = None):
        """One row per (site, patient): ``patient_id, site``, the clinical variables, then
        ``<MODALITY>_<feature>`` columns (``biomarkers.clinical.link`` with ``join: patient``, per site)."""
        import pandas as pd

        from ..clinical.link import link

        wide, clinical = self.read("features_wide", version), self.read("clinical", version)
        if wide.empty or clinical.empty:
            raise InputError(f"{self.uri}@{self._check_version(version)}: the lake has no features or clinical rows")
        parts = []
        for site in sorted(set(wide["site"]) & set(clinical["site"])):
            w = wide[wide["site"] == site].drop(columns=PARTITIONS)
            c = clinical[clinical["site"] == site].drop(columns=PARTITIONS)
            table, _ = link(w.reset_index(drop=True), c.reset_index(drop=True), join="patient")
            table.insert(1, "site", site)
            parts.append(table)
        df = pd.concat(parts, ignore_index=True)
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].tolist()
        if dup:
            raise InputError(f"{self.uri}: the same pseudonym occurs at several sites: {dup[:5]} "
                             "(pseudonyms are per site; give the sites different secrets)")
        return df

    def digest(self, version: int | None = None) -> str:
        """A content identifier of lake ``version``: ``v<N>-`` + 16 hex of SHA-256(ledger table id, N, live bundles)."""
        v = self._check_version(version)
        led = self.ledger(v)
        tid = self._table(LEDGER).metadata().id
        h = hashlib.sha256(json.dumps([tid, v, sorted(led.loc[led["live"], "bundle_id"])]).encode()).hexdigest()
        return f"v{v}-{h[:16]}"

    # ------------------------------------------------------------------ status
    def status(self, last: int = 10) -> dict:
        """Sites (keys, live bundle, patients), totals, current version, last additions."""
        led = self.ledger()
        keys = self.sites()
        sites = []
        for site in sorted(set(keys["site"]) | set(led["site"])):
            rows = led[led["site"] == site]
            live = rows[rows["live"]]
            sites.append({
                "site": site,
                "keys": sorted(keys.loc[keys["site"] == site, "fingerprint"]),
                "bundles": int(len(rows)),
                "live_bundle": live["bundle_id"].iloc[0] if len(live) else None,
                "patients": int(live["patients"].sum()) if len(live) else 0,
                "created": live["created"].iloc[0] if len(live) else None,
            })
        recent = led.sort_values("lake_version", ascending=False).head(last)
        return {
            "lake": self.uri,
            "version": self.version(),
            "sites": sites,
            "patients": int(led.loc[led["live"], "patients"].sum()) if len(led) else 0,
            "bundles": int(len(led)),
            "last_additions": [
                {"version": int(r.lake_version), "site": r.site, "bundle_id": r.bundle_id, "added_at": r.added_at,
                 "created": r.created, "patients": int(r.patients), "live": bool(r.live),
                 "schema_change": bool(json.loads(r.schema_change))}
                for r in recent.itertuples()],
        }

    # ------------------------------------------------------------------ helpers
    def _path(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    def _exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self._path(name), storage_options=self.storage_options)

    def _table(self, name: str, version: int | None = None):
        from deltalake import DeltaTable

        return DeltaTable(self._path(name), version=version, storage_options=self.storage_options)

    def _merge(self, name: str, row, predicate: str) -> None:
        for attempt in range(RETRIES + 1):
            try:
                self._merge_into(self._table(name), row, predicate)
                return
            except Exception as err:  # noqa: BLE001
                if not _is_conflict(err) or attempt >= RETRIES:
                    raise
                time.sleep(random.uniform(0.01, 0.05))

    @staticmethod
    def _merge_into(table, row, predicate: str) -> None:
        (table.merge(row, predicate=predicate, source_alias="s", target_alias="t")
         .when_not_matched_insert_all().execute())


def live_bundles(ledger) -> set[str]:
    """The live bundle of each site: latest ``created`` (the site's signed creation time), then bundle id."""
    if not len(ledger):
        return set()
    last = ledger.sort_values(["site", "created", "bundle_id"]).groupby("site").tail(1)
    return set(last["bundle_id"])


def pd_int(values):
    import pandas as pd

    return pd.Series(values, dtype="Int64")


def _with_partition_columns(data, site: str, bid: str):
    import pyarrow as pa

    for c in PARTITIONS:
        if c in data.column_names:
            data = data.drop_columns([c])
    n = data.num_rows
    data = data.add_column(0, "bundle_id", pa.array([bid] * n, pa.string()))
    data = data.add_column(0, "site", pa.array([site] * n, pa.string()))
    return data.replace_schema_metadata(None)


def _align(data, target, evolve: bool, where: str, pa):
    """``data`` with the table's column order and types; columns it lacks are null. New columns are
    refused unless ``evolve`` (then the schema is merged)."""
    names = set(data.column_names)
    new = [c for c in data.column_names if c not in target.names]
    if new and not evolve:
        raise BundleRefused(where, [f"columns not in the lake's table: {new[:10]}{' ...' if len(new) > 10 else ''} "
                                    "(give --allow-schema-change to add them)"])
    cols, fields = [], []
    for f in target:
        if f.name in names:
            col = data.column(f.name)
            if not col.type.equals(f.type):
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    if not evolve:
                        raise BundleRefused(where, [f"column {f.name}: type {col.type} does not match the lake's "
                                                    f"{f.type}"]) from None
            cols.append(col)
        else:
            cols.append(pa.nulls(data.num_rows, f.type))
        fields.append(pa.field(f.name, cols[-1].type))
    for c in new:
        cols.append(data.column(c))
        fields.append(pa.field(c, data.column(c).type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _is_conflict(err: Exception) -> bool:
    from deltalake.exceptions import CommitFailedError

    if isinstance(err, CommitFailedError):
        return True
    msg = str(err).lower()
    return "concurrent" in msg or "version already exists" in msg or "already exists" in msg and "version" in msg


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalise(uri: str | os.PathLike) -> str:
    s = os.fspath(uri)
    return s.rstrip("/") if "://" in s else str(Path(s).resolve())


def _ledger_schema(pa):
    types = {"patients": pa.int64(), "with_images": pa.bool_()}
    return pa.schema([(c, types.get(c, pa.string())) for c in LEDGER_COLUMNS])


def _sites_schema(pa):
    return pa.schema([("site", pa.string()), ("fingerprint", pa.string()), ("public_key", pa.string()),
                      ("registered_at", pa.string())])


def open_lake(uri: str | os.PathLike, storage_options: dict | None = None) -> Lake:
    return Lake(uri, storage_options)


def read_lake_ref(ref: str) -> tuple[Any, str, str, int]:
    """``LAKE@VERSION`` -> (analysis table, lake uri, digest, version) for experiments."""
    uri, version = parse_lake_ref(ref)
    lake = Lake(uri)
    v = lake._check_version(version)
    return lake.analysis_table(v), lake.uri, lake.digest(v), v
