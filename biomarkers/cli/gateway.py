"""CLI of the intake area: ``biomarkers gateway CONFIG.yaml``, ``biomarkers gateway status CONFIG.yaml``,
``biomarkers pull CONFIG.yaml [--since DATE] [--study UID ...] [--modality CT ...]``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import List, Optional

import typer

from ._app import app


@app.command("gateway")
def gateway_cmd(
    args: List[str] = typer.Argument(..., metavar="[status] CONFIG.yaml",
                                     help="Gateway YAML (see configs/gateway.yaml); 'status CONFIG.yaml' shows the "
                                     "status of the gateway running on it."),
    as_json: bool = typer.Option(False, "--json", help="With status: print the status as JSON."),
) -> None:
    """Run the site's DICOM gateway: a C-STORE SCP spooling instances durably, handing every study that
    stayed stable for stable_seconds to the pipeline (biomarkers run, incremental). Stops on SIGINT
    (exit 130) or SIGTERM (exit 143); instances already acknowledged are kept."""
    from ..errors import ConfigError
    from ..intake import load_gateway_config

    if len(args) == 2 and args[0] == "status":
        _status(Path(args[1]), as_json)
        return
    if len(args) != 1:
        raise ConfigError("usage: biomarkers gateway CONFIG.yaml | biomarkers gateway status CONFIG.yaml")
    cfg, pipe = load_gateway_config(Path(args[0]))
    _serve(cfg, pipe)


def _serve(cfg, pipe) -> None:
    import signal
    import threading

    from ..intake.service import Gateway
    from ..logs import echo

    gw = Gateway(cfg, pipe)
    stopped = threading.Event()
    code = {"rc": 0}

    def on_signal(signum, _frame):
        code["rc"] = 130 if signum == signal.SIGINT else 143
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    gw.start()
    c = cfg.scp
    echo(f"gateway {c.ae_title} listening on {c.host}:{gw.port}{' (TLS)' if c.tls else ''}; studies stable after "
         f"{cfg.stable_seconds:g} s go to the pipeline"
         + (f"; status on http://{cfg.status.http_host}:{gw.http_port}/status" if cfg.status.http_port is not None else ""))
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        echo("gateway stopping (acknowledged instances are kept)")
        gw.stop()
    if code["rc"]:
        raise SystemExit(code["rc"])


def _status(config: Path, as_json: bool) -> None:
    from ..intake import load_gateway_config
    from ..intake.service import read_status
    from ..logs import echo

    cfg, _ = load_gateway_config(config)
    st = read_status(cfg)
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return
    q, n = st.get("queue", {}), st.get("counts", {})
    echo(f"gateway: {st.get('state')}" + (f" (up {st['uptime_s']:.0f} s)" if "uptime_s" in st else ""))
    if q:
        echo(f"queue: {q.get('studies_waiting_stable', 0)} studies ({q.get('instances_waiting_stable', 0)} instances) "
             f"waiting to be stable, {q.get('studies_waiting_pipeline', 0)} waiting for the pipeline"
             + (" (pipeline running)" if q.get("pipeline_running") else ""))
    if n:
        echo(f"received: {n.get('studies_received', 0)} studies, {n.get('instances_received', 0)} instances "
             f"({n.get('bytes_received', 0) / 1e6:.1f} MB), {n.get('duplicates', 0)} duplicates, "
             f"{n.get('instances_refused', 0)} refused; associations: {n.get('associations_accepted', 0)} accepted, "
             f"{n.get('associations_rejected', 0)} rejected")
        echo(f"processed: {n.get('studies_processed', 0)} studies, failed: {n.get('studies_failed', 0)}, "
             f"pipeline runs: {n.get('pipeline_runs', 0)}"
             + (f" (last {st['last_processing_s']:.1f} s)" if st.get("last_processing_s") is not None else ""))
    for e in st.get("last_errors", []):
        echo(f"  error ({e['age_s']:.0f} s ago): {e['message']}")


@app.command("pull")
def pull_cmd(
    config: Path = typer.Argument(..., help="Gateway YAML with a pull section (see configs/gateway.yaml)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only studies from this date on (YYYY-MM-DD)."),
    study: Optional[List[str]] = typer.Option(None, "--study", help="Study Instance UID (repeatable)."),
    modality: Optional[List[str]] = typer.Option(
        None, "--modality", help="Only series of this modality (repeatable; RTSTRUCT/SEG series always come along)."),
    no_run: bool = typer.Option(False, "--no-run", help="Only retrieve into the spool; do not run the pipeline."),
) -> None:
    """Query/retrieve studies from the PACS (DICOMweb or DIMSE) into the spool, then hand them to the
    pipeline. Resumable: a rerun fetches only the instances that are missing. Exit status 0 when
    every instance was retrieved, 2 when some could not be (run the same pull again)."""
    from ..errors import BiomarkersError, ConfigError
    from ..intake import load_gateway_config
    from ..intake.pull import pull
    from ..logs import echo

    day = None
    if since is not None:
        try:
            day = dt.date.fromisoformat(since)
        except ValueError:
            raise ConfigError(f"--since: {since!r} is not a date (YYYY-MM-DD)") from None
    cfg, pipe = load_gateway_config(config)
    rep = pull(cfg, pipe, since=day, studies=study or [], modalities=modality or [], run=not no_run)
    echo(rep.summary())
    if rep.failed:
        raise BiomarkersError(f"pull incomplete: {rep.failed} instance(s) not retrieved; run the same pull again "
                              "(it fetches only what is missing)")
