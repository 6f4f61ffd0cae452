"""CLI of the multicentre datalake: ``biomarkers contribute`` (site side) and ``biomarkers lake ...`` (central side).

Exit status: 0 done (also when a bundle was already in the lake), 2 invalid input or a refused
bundle (the message lists every reason), 1 unexpected error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import BiomarkersError, ConfigError
from ..logs import echo
from ._app import app

lake_app = typer.Typer(
    help="The central datalake (Delta Lake): init, register site keys, add signed bundles, status, query, "
    "snapshot releases; keygen for sites.",
    no_args_is_help=True,
)
app.add_typer(lake_app, name="lake")

_KEYS_HELP = "Folder of the site's keys (default: $BIOMARKERS_KEYS_DIR, else ~/.config/biomarkers/keys)."


@app.command("contribute")
def contribute_cmd(
    out: Path = typer.Argument(..., help="Pipeline output folder (biomarkers run): features/, dataset/, clinical/, qc/."),
    site: str = typer.Option(..., "--site", help="Site name as registered in the lake."),
    bundle: Path = typer.Option(..., "--out", help="Bundle folder to write (must not exist)."),
    with_images: bool = typer.Option(False, "--with-images", help="Also ship the NIfTI images, sidecars and masks."),
    schema: Optional[Path] = typer.Option(None, "--schema", help="Clinical schema YAML, or the pipeline config "
                                          "(its clinical.schema), the clinical table was validated with (recorded "
                                          "with its version). Without it: the clinical table's columns and types."),
    key: Optional[Path] = typer.Option(None, "--key", help="The site's private key (default: KEYS/SITE.key)."),
    keys: Optional[Path] = typer.Option(None, "--keys", help=_KEYS_HELP),
    needles: Optional[Path] = typer.Option(None, "--needles", help="Known identifying values (as for `biomarkers "
                                           "scan --needles`) also searched in every file of the bundle."),
) -> None:
    """Package what may leave the hospital into a signed bundle (site side).

    Tables (features long + wide, de-identified manifest, pseudonymised clinical table), provenance
    (software versions, parameter files, clinical schema and its version), QC summary files, the PHI
    scan of the bundle, and a bundle.json listing every file's SHA-256, signed with the site's
    Ed25519 key. Refused (exit 2, nothing written) when the scan finds an identifying value.
    """
    from ..io import check_apart
    from ..lake import build_bundle, keys_dir
    from ..locks import output_lock

    check_apart(out, bundle, "pipeline output folder", "bundle folder")
    table = None
    if needles is not None:
        from .deid import _load_needles

        table = _load_needles(needles)
    # the bundle must not exist: the lock is on the folder it is written (and renamed) into
    with output_lock(bundle.parent, "biomarkers contribute", tree=False):
        res = build_bundle(out, site, bundle, key or keys_dir(keys) / f"{site}.key", schema=schema,
                           with_images=with_images, needles=table)
    echo(res.summary())


@lake_app.command("keygen")
def keygen_cmd(
    site: str = typer.Option(..., "--site", help="Site name."),
    keys: Optional[Path] = typer.Option(None, "--keys", help=_KEYS_HELP),
) -> None:
    """Make the site's Ed25519 key pair: KEYS/SITE.key (private, mode 0600; stays at the site) and
    KEYS/SITE.pub (send it to the lake's operator, who registers it)."""
    from ..lake import keygen

    priv, pub, fp = keygen(site, keys)
    echo(f"private key: {priv} (mode 0600; never leaves the site)")
    echo(f"public key:  {pub} (register it: biomarkers lake register LAKE --site {site} --key {pub.name})")
    echo(f"fingerprint: {fp}")


def _site_key(spec: str) -> tuple[str, Path]:
    site, sep, path = spec.partition("=")
    if not sep or not site or not path:
        raise ConfigError(f"--site-key {spec!r}: expected SITE=PUBLIC_KEY.pem")
    return site, Path(path)


def _check_apart_local(src, out, src_what: str, out_what: str) -> None:
    """:func:`biomarkers.io.check_apart` when both are local paths (a lake may be ``s3://...``)."""
    from ..io import check_apart

    if "://" not in str(src) and "://" not in str(out):
        check_apart(src, out, src_what, out_what)


def _read_key(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{path}: public key file not found")
    return path.read_bytes()


@lake_app.command("init")
def init_cmd(
    lake: str = typer.Argument(..., help="Lake location: a folder, or s3://bucket/prefix (delta-rs object store)."),
    site_key: List[str] = typer.Option([], "--site-key", help="Register a site key at creation: SITE=SITE.pub (repeatable)."),
) -> None:
    """Create an empty lake (version 0), optionally registering site public keys."""
    from ..lake import Lake

    pairs = [_site_key(s) for s in site_key]
    keys = [(s, p, _read_key(p)) for s, p in pairs]
    lk = Lake.init(lake)
    for s, p, data in keys:
        echo(f"registered site {s}: {lk.register(s, data, str(p))}")
    echo(f"lake created at {lk.uri} (version {lk.version()})")


@lake_app.command("register")
def register_cmd(
    lake: str = typer.Argument(..., help="Lake location."),
    site: str = typer.Option(..., "--site", help="Site name (as the site passes to `contribute --site`)."),
    key: Path = typer.Option(..., "--key", help="The site's public key (SITE.pub from `lake keygen`)."),
) -> None:
    """Register a site's public key; bundles of that site are accepted only when they verify with it."""
    from ..lake import Lake

    fp = Lake(lake).register(site, _read_key(key), str(key))
    echo(f"registered site {site}: {fp}")


@lake_app.command("add")
def add_cmd(
    lake: str = typer.Argument(..., help="Lake location."),
    bundles: List[Path] = typer.Argument(..., help="Bundle folder(s) from `biomarkers contribute`."),
    allow_schema_change: bool = typer.Option(False, "--allow-schema-change",
                                             help="Accept a bundle whose feature definitions or clinical schema "
                                             "differ from the lake's (the differences are recorded)."),
) -> None:
    """Verify and add bundles: signature, checksums, identifier scan, compatibility; one version per bundle.

    A refused bundle does not stop the others; the command then exits with status 2.
    """
    from ..lake import BundleRefused, Lake

    for b in bundles:  # no lock on LAKE: Delta's own commits keep concurrent adds apart (both land)
        _check_apart_local(b, lake, "bundle folder", "lake")
    lk = Lake(lake)
    refused = []
    for b in bundles:
        try:
            res = lk.add(b, allow_schema_change=allow_schema_change)
        except BundleRefused as err:
            refused.append(str(err))
            echo(f"error: {err}")
            continue
        echo(res.summary())
        for d in res.schema_change:
            echo(f"  schema change: {d}")
    if refused:
        raise BiomarkersError(f"{len(refused)} of {len(bundles)} bundle(s) refused (see above)")


@lake_app.command("status")
def status_cmd(
    lake: str = typer.Argument(..., help="Lake location."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    last: int = typer.Option(10, "--last", help="How many recent additions to list."),
) -> None:
    """Sites (keys, live bundle, patients), version, last additions."""
    from ..lake import Lake

    st = Lake(lake).status(last=last)
    if as_json:
        echo(json.dumps(st, indent=2))
        return
    echo(f"lake {st['lake']}: version {st['version']}, {len(st['sites'])} site(s), {st['patients']} patients, "
         f"{st['bundles']} bundle(s) in the history")
    for s in st["sites"]:
        echo(f"  site {s['site']:<16} patients {s['patients']:>6}  bundles {s['bundles']:>3}  live {s['live_bundle'] or '-'}"
             f"  keys {', '.join(s['keys']) or '(none registered)'}")
    if st["last_additions"]:
        echo("last additions:")
    for a in st["last_additions"]:
        echo(f"  v{a['version']:<5} {a['added_at']}  site {a['site']:<12} {a['bundle_id']}  {a['patients']} patients"
             f"  {'live' if a['live'] else 'superseded'}{'  schema change' if a['schema_change'] else ''}")


@lake_app.command("query")
def query_cmd(
    lake: str = typer.Argument(..., help="Lake location, or LAKE@VERSION."),
    sql: str = typer.Argument(..., help="DuckDB SQL over features_long, features_wide, clinical, manifest, bundles, sites."),
    version: Optional[int] = typer.Option(None, "--version", help="Lake version (default: latest)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the result to this CSV file instead of printing it."),
) -> None:
    """Query a lake version with DuckDB (only the live rows of each site; `bundles` is the history)."""
    import pandas as pd

    from ..lake import Lake, parse_lake_ref

    uri, v = parse_lake_ref(lake)
    df = Lake(uri).query(sql, version if version is not None else v)
    if csv is not None:
        from ..io import write_csv

        write_csv(csv, df)
        echo(f"{len(df)} rows -> {csv}")
        return
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        echo(df.to_string(index=False))


@lake_app.command("snapshot")
def snapshot_cmd(
    lake: str = typer.Argument(..., help="Lake location."),
    version: int = typer.Option(..., "--version", help="Lake version to release."),
    config: Path = typer.Option(..., "--config", help="Release config YAML (as for `biomarkers release`)."),
    out: Path = typer.Option(..., "--out", help="RELEASES folder."),
    release_version: Optional[str] = typer.Option(None, "--release-version", help="X.Y.Z of the release "
                                                  "(default: next patch version)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the release to MLflow."),
) -> None:
    """A partner release built by the release builder from one lake version."""
    from ..lake import Lake
    from ..lake.snapshot import snapshot
    from ..locks import output_lock

    _check_apart_local(lake, out, "lake", "releases folder")
    with output_lock(out, "biomarkers lake snapshot"):
        res = snapshot(Lake(lake), version, config, out, release_version=release_version,
                       tracking_uri=False if no_mlflow else tracking_uri)
    echo(res.summary())
