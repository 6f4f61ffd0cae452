"""Prospective intake: receive studies from the hospital PACS and feed them into the pipeline as they arrive.

* :mod:`.config` - :class:`GatewayConfig` (``biomarkers gateway`` / ``biomarkers pull`` YAML);
* :mod:`.spool` - durable, site-side instance store (atomic, fsync'ed, duplicates recognised);
* :mod:`.scp` - the C-STORE SCP (pynetdicom): peers, contexts, checks, statuses;
* :mod:`.service` - :class:`Gateway`: SCP + stable-study detection + pipeline hand-off + status;
* :mod:`.pull` - query/retrieve over DICOMweb (QIDO-RS/WADO-RS) or DIMSE (C-FIND + C-GET/C-MOVE);
* :mod:`.audit` - who sent what, with pseudonymised study references.

Nothing is imported or started at import time.
"""

from .config import GatewayConfig, load_gateway_config

__all__ = ["GatewayConfig", "load_gateway_config"]
