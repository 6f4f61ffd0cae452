"""``GatewayConfig``: the YAML of ``biomarkers gateway`` and ``biomarkers pull`` (see ``configs/gateway.yaml``).

The gateway owns three site-side places, all outside every de-identified output:

* the **spool** (``spool``): raw received instances (they carry identifiers), files mode 0600;
* the **audit log** (``audit_log``): who sent what, with pseudonymised study references, mode 0600;
* the gateway's **state** (``<spool>/state``): status, lock, pipeline log.

Stable studies leave the spool for the pipeline's ``source.dicom`` folder (the received-studies
folder: ingest's SRC); the pipeline config named by ``pipeline`` then runs incrementally.
Validation refuses a spool or audit log inside the pipeline's ``out``, a spool overlapping the
received-studies folder, and a status endpoint not bound to the loopback interface.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import Settings, read_yaml, validate
from ..errors import ConfigError, PrivacyError

AE_PATTERN = r"^[ -~]{1,16}$"  # DICOM AE: 1-16 printable ASCII characters (no backslash checked below)


def _ae(v: str) -> str:
    v = v.strip()
    if not v or "\\" in v:
        raise ValueError("an AE title is 1-16 printable ASCII characters without backslash")
    return v


class Peer(Settings):
    """A sender allowed to associate: its calling AE title and the addresses it may come from."""

    ae_title: str = Field(pattern=AE_PATTERN)
    #: IP addresses or networks (``10.1.2.0/24``) the peer connects from.
    addresses: list[str] = Field(min_length=1)

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, v: str) -> str:
        return _ae(v)

    @field_validator("addresses")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address or network (host names are not accepted)") from None
        return v

    def allows(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(a, strict=False) for a in self.addresses)


class TLSSettings(Settings):
    """TLS for the SCP (PEM files). ``ca`` with ``require_client_cert`` asks senders for a certificate."""

    cert: Path
    key: Path
    ca: Path | None = None
    require_client_cert: bool = False


class SCPSettings(Settings):
    """The C-STORE SCP: where it listens and whom it accepts."""

    ae_title: str = Field("BIOMARKERS", pattern=AE_PATTERN)
    host: str = "127.0.0.1"  # interface to listen on (0.0.0.0: all)
    port: int = Field(11112, ge=1, le=65535)
    peers: list[Peer] = Field(min_length=1)
    tls: TLSSettings | None = None
    max_associations: int = Field(8, ge=1, le=256)
    #: Largest PDU we receive (bytes; larger PDUs mean fewer, bigger network reads).
    max_pdu: int = Field(4 * 1024 * 1024, ge=4096)
    #: fsync every instance (and its folder) before the success status. false ONLY for benchmarks:
    #: an acknowledged instance may then be lost on a power failure.
    fsync: bool = True
    network_timeout_s: float = Field(60.0, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, v: str) -> str:
        return _ae(v)


class StatusSettings(Settings):
    """The optional health endpoint (JSON on ``GET /status``), bound to the loopback interface only."""

    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535)  # null: no endpoint (``biomarkers gateway status``)
    last_errors: int = Field(20, ge=1, le=1000)

    @field_validator("http_host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v != "localhost":
            try:
                ok = ipaddress.ip_address(v).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"the status endpoint is bound to the loopback interface only (got {v!r})")
        return v


class DicomwebSource(Settings):
    """A PACS's DICOMweb service (QIDO-RS + WADO-RS)."""

    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(60.0, gt=0)


class DimseSource(Settings):
    """A PACS's DIMSE service: C-FIND, then C-GET (on the same association) or C-MOVE (to ``move_destination``)."""

    ae_title: str = Field(pattern=AE_PATTERN)
    host: str
    port: int = Field(ge=1, le=65535)
    retrieve: Literal["get", "move"] = "get"
    #: C-MOVE destination AE title (the PACS must know it); default: ``scp.ae_title``.
    move_destination: str | None = Field(None, pattern=AE_PATTERN)
    timeout_s: float = Field(60.0, gt=0)


class PullSettings(Settings):
    """Where ``biomarkers pull`` queries and retrieves from."""

    protocol: Literal["dicomweb", "dimse"] = "dicomweb"
    dicomweb: DicomwebSource | None = None
    dimse: DimseSource | None = None

    @model_validator(mode="after")
    def _source(self):
        if getattr(self, self.protocol) is None:
            raise ValueError(f"protocol is {self.protocol!r} but the {self.protocol} section is missing")
        return self


class GatewayConfig(Settings):
    """The whole gateway (``biomarkers gateway CONFIG.yaml``, ``biomarkers pull CONFIG.yaml``)."""

    #: Pipeline config run for stable studies (``biomarkers run``); its ``source.dicom`` is the
    #: received-studies folder, its ``out`` the de-identified output OUT.
    pipeline: Path
    spool: Path
    audit_log: Path | None = None  # default <spool>/audit.jsonl
    #: The audit log is rotated when a line would take it past this size (MB): the full file is renamed
    #: ``<name>.<UTC time>.jsonl`` (mode 0600, same folder) and a new one is started. null: never rotated.
    audit_rotate_mb: float | None = Field(64.0, gt=0)
    #: Rotated audit files kept (the oldest beyond this are deleted); null: all are kept.
    audit_keep: int | None = Field(None, ge=1)
    #: Seconds without a new instance after which a study is stable (like Orthanc's StableAge).
    stable_seconds: float = Field(60.0, gt=0)
    scp: SCPSettings
    status: StatusSettings = Field(default_factory=StatusSettings)
    pull: PullSettings | None = None
    run_pipeline: bool = True  # false: stable studies are only moved to the received-studies folder

    def resolved(self, base: Path) -> "GatewayConfig":
        def r(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

        upd = {"pipeline": r(self.pipeline), "spool": r(self.spool),
               "audit_log": r(self.audit_log) if self.audit_log else r(self.spool) / "audit.jsonl"}
        scp = self.scp
        if scp.tls is not None:
            tls = scp.tls.model_copy(update={k: r(getattr(scp.tls, k)) for k in ("cert", "key", "ca")})
            scp = scp.model_copy(update={"tls": tls})
        return self.model_copy(update={**upd, "scp": scp})


def _inside(p: Path, root: Path) -> bool:
    p, root = p.resolve(), root.resolve()
    return p == root or root in p.parents


def load_pipeline_config(path: Path):
    """The pipeline's own validated config (``biomarkers run``'s loader)."""
    from ..pipeline import load_config

    return load_config(path)


def load_gateway_config(path: str | Path) -> tuple[GatewayConfig, object]:
    """Read and validate a gateway YAML and its pipeline config; returns ``(gateway, pipeline)``.

    Raises:
        ConfigError: unknown key, wrong type, missing pipeline config (names file and key).
        PrivacyError: the spool or audit log inside OUT, or spool and received folder overlapping.
    """
    path = Path(path)
    cfg = validate(GatewayConfig, read_yaml(path), source=str(path)).resolved(path.resolve().parent)
    if not cfg.pipeline.is_file():
        raise ConfigError(f"{path}: pipeline: {cfg.pipeline} not found")
    pipe = load_pipeline_config(cfg.pipeline)
    out, received = Path(pipe.out), Path(pipe.source.dicom)
    for what, p in (("spool", cfg.spool), ("audit_log", cfg.audit_log)):
        if _inside(p, out):
            raise PrivacyError(f"{path}: {what}: {p} is inside the de-identified output {out} (pipeline out); "
                               "keep it on the site side, outside every output")
    if _inside(received, out):
        raise PrivacyError(f"{path}: the pipeline's source.dicom {received} (where received studies go, with their "
                           f"identifiers) is inside its out {out}; keep it on the site side")
    if _inside(cfg.spool, received) or _inside(received, cfg.spool):
        raise ConfigError(f"{path}: spool: {cfg.spool} and the pipeline's source.dicom {received} overlap; "
                          "stable studies move from the spool to source.dicom, use two separate folders")
    if _inside(out, cfg.spool):
        raise PrivacyError(f"{path}: the pipeline's out {out} is inside the spool {cfg.spool}")
    if cfg.scp.tls is not None:
        for k in ("cert", "key", "ca"):
            p = getattr(cfg.scp.tls, k)
            if p is not None and not p.is_file():
                raise ConfigError(f"{path}: scp.tls.{k}: {p} not found")
    return cfg, pipe
