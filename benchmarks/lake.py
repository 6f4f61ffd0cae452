"""Benchmark of the datalake: ``lake add`` rate and memory as the lake grows, per-site aggregate queries
against DuckDB over the same data as plain Parquet files, in the same run.

    .venv/bin/python benchmarks/lake.py [--sites 100] [--patients 1000] [--features 50] [--repeat 5] [--work DIR]

1. Makes ``--sites`` synthetic site outputs (feature tables wide + long, manifest, clinical table,
   provenance; random values, pseudonym-shaped ids), each with its own Ed25519 key, and packages
   each with ``build_bundle`` (the code of ``biomarkers contribute``: checksums, PHI scan, signature).
2. Adds the bundles one by one, each ``lake add`` in its own process (as the CLI runs), recording
   the time of ``Lake.add`` inside the process, the process's wall time and its peak RSS
   (``os.wait4``), so the memory of an add can be compared between an empty and a full lake.
3. Per-site aggregate queries (wide: count + means of 5 features per site; long: mean value per
   site and feature) through ``Lake.query`` (DuckDB over the Delta tables of the latest version,
   live rows only) and through DuckDB over plain Parquet copies of the same rows
   (``read_parquet`` of one file per site); best of ``--repeat``; the results are compared.
Targets: query within 2x of plain Parquet; add memory not growing with the lake.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

B32 = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
SCHEMA = {
    "patient_id": {"column": "patient_id", "pattern": "P[0-9]+"},
    "join": "patient",
    "variables": {"age": {"type": "float", "min": 18, "max": 110}, "sex": {"type": "category"},
                  "outcome": {"type": "int", "allowed": [0, 1]}},
}
ADD = ("import json, sys, time\n"
       "import biomarkers.deid.scan, deltalake, duckdb, pandas, pyarrow.dataset  # imports outside the timing\n"
       "from biomarkers.lake import Lake\n"
       "t = time.perf_counter(); r = Lake(sys.argv[1]).add(sys.argv[2]); dt = time.perf_counter() - t\n"
       "print(json.dumps({'add_s': dt, 'status': r.status, 'version': r.version}))\n")


def site_output(out: Path, site_no: int, patients: int, features: int, rng) -> None:
    """A pipeline-output-shaped folder of random values for one site."""
    ids = ["BM-" + "".join(rng.choice(B32, 12)) for _ in range(patients)]
    study = [f"2.25.{rng.integers(1, 2**62)}{i}" for i in range(patients)]
    series = [f"2.25.{rng.integers(1, 2**62)}{i}" for i in range(patients)]
    names = [f"F{j:03d}" for j in range(features)]
    vals = rng.normal(site_no % 7, 1.0, size=(patients, features))
    key = pd.DataFrame({"patient_id": ids, "study_uid": study, "series_uid": series, "modality": "CT", "roi": "GTV"})
    wide = pd.concat([key, pd.DataFrame(vals, columns=[f"original_firstorder_{n}" for n in names])], axis=1)
    long = pd.DataFrame({
        "patient_id": np.repeat(ids, features), "study_uid": np.repeat(study, features),
        "series_uid": np.repeat(series, features), "modality": "CT", "roi": "GTV", "image_type": "original",
        "feature_class": "firstorder", "feature": np.tile(names, patients), "ibsi_code": "", "value": vals.ravel()})
    manifest = key.assign(kind="image", path=[f"images/{i}/CT_{s[5:17]}.nii.gz" for i, s in zip(ids, series)],
                          status="converted")
    clinical = pd.DataFrame({"patient_id": ids, "centre": f"S{site_no:03d}", "age": rng.uniform(30, 80, patients).round(),
                             "sex": rng.choice(["male", "female"], patients), "outcome": rng.integers(0, 2, patients)})
    for rel, df in (("features/features_wide.parquet", wide), ("features/features_long.parquet", long),
                    ("dataset/manifest.parquet", manifest), ("clinical/clinical.parquet", clinical)):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / rel, index=False)
    prov = {"params": [{"modality": "CT", "name": "ct", "param_hash": "0" * 64,
                        "params": {"setting": {"binWidth": 25}, "imageType": {"Original": {}}}}],
            "versions": {"pyradiomics": "v3.1.4", "SimpleITK": "2.5.7", "numpy": "2.4.6", "PyWavelets": "1.8.0"}}
    (out / "features/provenance.json").write_text(json.dumps(prov))


def rss_mb(rusage) -> float:
    return rusage.ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--patients", type=int, default=1000, help="patients per site")
    ap.add_argument("--features", type=int, default=50, help="features per patient")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary folder, removed)")
    args = ap.parse_args()

    from biomarkers.lake import Lake, build_bundle, keygen

    work = args.work or Path(tempfile.mkdtemp(prefix="lake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (work / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    t0 = time.perf_counter()
    lake = Lake.init(work / "lake")
    bundles = []
    for i in range(args.sites):
        site = f"site{i:03d}"
        site_output(work / "out" / site, i, args.patients, args.features, rng)
        priv, pub, _ = keygen(site, work / "keys")
        lake.register(site, pub.read_bytes())
        build_bundle(work / "out" / site, site, work / "bundles" / site, priv, schema=work / "schema.yaml")
        bundles.append(work / "bundles" / site)
    t_bundles = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (work / "bundles").rglob("*") if f.is_file())
    print(f"{args.sites} bundles of {args.patients} patients x {args.features} features "
          f"({args.sites * args.patients:,} patient rows, {args.sites * args.patients * args.features:,} long rows, "
          f"{size / 1e6:.0f} MB) built and signed in {t_bundles:.1f} s ({t_bundles / args.sites:.2f} s a bundle)")

    rows = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    for i, b in enumerate(bundles):
        t1 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", ADD, str(work / "lake"), str(b)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        out, err = p.stdout.read(), p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t1
        if status != 0:
            print(err, file=sys.stderr)
            return 1
        r = json.loads(out.strip().splitlines()[-1])
        rows.append({"i": i + 1, "add_s": r["add_s"], "wall_s": wall, "rss_mb": rss_mb(ru), "version": r["version"]})
    t_add = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    assert df["version"].tolist() == list(range(1, args.sites + 1))
    q = max(1, args.sites // 10)
    first, last = df.head(q), df.tail(q)
    print(f"\nlake add, one process per bundle ({args.sites} adds, {t_add:.1f} s in all):")
    print(f"  Lake.add inside the process: median {df['add_s'].median():.2f} s "
          f"({args.patients / df['add_s'].median():,.0f} patient rows/s, "
          f"{args.patients * args.features / df['add_s'].median():,.0f} long rows/s); "
          f"first {q}: {first['add_s'].median():.2f} s, last {q}: {last['add_s'].median():.2f} s")
    print(f"  whole process (Python start-up + imports + add): median {df['wall_s'].median():.2f} s "
          f"= {1 / df['wall_s'].median():.2f} bundles/s")
    print(f"  peak RSS of an add process: first {q} median {first['rss_mb'].median():.0f} MB, "
          f"last {q} median {last['rss_mb'].median():.0f} MB (ratio {last['rss_mb'].median() / first['rss_mb'].median():.2f}; "
          f"max {df['rss_mb'].max():.0f} MB)")
    slope = np.polyfit(df["i"], df["rss_mb"], 1)[0]
    print(f"  RSS trend: {slope:+.3f} MB per bundle already in the lake")

    # plain Parquet copies of the same rows (site column included), one file per site and table
    lake = Lake(work / "lake")
    for name in ("features_wide", "features_long"):
        d = work / "plain" / name
        d.mkdir(parents=True, exist_ok=True)
        for b in bundles:
            t = pd.read_parquet(b / "tables" / f"{name}.parquet")
            t.insert(0, "site", b.name)
            t.to_parquet(d / f"{b.name}.parquet", index=False)
    import duckdb

    cols = [f"original_firstorder_F{j:03d}" for j in range(min(5, args.features))]
    queries = {
        "wide: per-site count + 5 means": (
            "select site, count(*) as n, " + ", ".join(f"avg({c}) as m{j}" for j, c in enumerate(cols))
            + " from {t} group by site order by site", "features_wide"),
        "long: per-site, per-feature mean": (
            "select site, feature, count(*) as n, avg(value) as m from {t} group by site, feature order by site, feature",
            "features_long"),
    }
    print(f"\nper-site aggregate queries, best of {args.repeat} (same run, same rows):")
    results = {}
    for label, (sql, table) in queries.items():
        plain = duckdb.connect()
        glob = str(work / "plain" / table / "*.parquet")
        times_p, times_l, times_o = [], [], []
        for _ in range(args.repeat):
            t1 = time.perf_counter()
            ref = plain.execute(sql.format(t=f"read_parquet('{glob}')")).df()
            times_p.append(time.perf_counter() - t1)
            t1 = time.perf_counter()
            con = lake.connect()
            t2 = time.perf_counter()
            got = con.execute(sql.format(t=table)).df()
            t3 = time.perf_counter()
            con.close()
            times_o.append(t2 - t1)
            times_l.append(t3 - t2)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True), check_dtype=False)
        bp, bl, bo = min(times_p), min(times_l), min(times_o)
        results[label] = (bp, bl, bo)
        print(f"  {label:<34} plain Parquet {bp * 1000:7.1f} ms | lake {bl * 1000:7.1f} ms "
              f"(ratio {bl / bp:.2f}, target <= 2) | + opening the lake version {bo * 1000:6.1f} ms "
              f"(ratio with it {(bl + bo) / bp:.2f})")
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; results identical: yes")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
