"""MLflow tracking helpers: where runs go (:mod:`.store`), what they log (:mod:`.datasets`), the kinds
of run and the experiments' parent/child runs (:mod:`.runs`), the pipeline's logging helper process
(:mod:`.agent`). A leaf: it imports no other ``biomarkers`` sub-package; tables and releases are read
by :func:`biomarkers.release.read_table`.
"""

from .datasets import flatten, log_feature_set, safe_source
from .runs import RUN_KIND, RunKind, child_run, parent_run, run_tags
from .store import ARTIFACT_DIR, DEFAULT_DB, artifact_location, client, get_or_create_experiment, tracking_uri, \
    using_tracking

__all__ = [
    "ARTIFACT_DIR", "DEFAULT_DB", "RUN_KIND", "RunKind", "artifact_location", "child_run", "client", "flatten",
    "get_or_create_experiment", "log_feature_set", "parent_run", "run_tags", "safe_source", "tracking_uri",
    "using_tracking",
]
