"""MLflow: the runs every training records, the served pyfunc, and the registry's aliases.

The only part of recsys that imports ``mlflow`` (inside functions, so
importing recsys stays cheap):

- :mod:`~recsys.registry.runs`: where the store lives, logging a training or
  tuning run;
- :mod:`~recsys.registry.pyfunc`: the champion as a pyfunc model that answers
  top-K lists by user id;
- :mod:`~recsys.registry.aliases`: versions, the ``champion`` /
  ``challenger`` / ``previous_champion`` aliases and the decisions that move them;
- :mod:`~recsys.registry.views`: read-only views for the operator's page;
- :mod:`~recsys.registry.locks`: the promotion and migration locks;
- :mod:`~recsys.registry.recovery`: what killed or retried tasks leave behind.

Callers use this package's names (``from recsys import registry;
registry.get_champion()``).
"""

from recsys.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    aliases,
    apply_decision,
    champion_uri,
    decision_artifact,
    get_champion,
    load_model,
    mark_challenger,
    promote_manually,
    recommend_for_users,
    register_model,
    rollback,
    set_alias,
    set_version_tags,
    version_by_alias,
)
from recsys.registry.locks import LockTimeoutError, model_lock, store_lock
from recsys.registry.pyfunc import MODEL_ARTIFACT
from recsys.registry.recovery import (
    TAG_ARCHIVED,
    TAG_END_REASON,
    TAG_REPLACED_BY,
    TAG_RUN_KEY,
    TAG_TASK,
    archive_undecided_versions,
    end_abandoned_runs,
    replace_earlier_tries,
)
from recsys.registry.runs import (
    DIGEST_LENGTH,
    TAG_DATA_HASH,
    TAG_INPUT_HASH,
    TAG_METRIC_NAMES,
    TAG_MODEL_TYPE,
    TAG_MODEL_URI,
    InputTable,
    RunInfo,
    TrackingError,
    check_store,
    client,
    log_files,
    log_model_run,
    log_tuning,
    metric_key,
    migrate_store,
    model_type_of,
    setup,
)
from recsys.registry.views import (
    get_run_summary,
    get_version_summary,
    list_registered_models,
    list_run_artifacts,
    list_training_runs,
    read_run_artifact,
)

__all__ = [
    "CHALLENGER",
    "TAG_ARCHIVED",
    "TAG_END_REASON",
    "TAG_REPLACED_BY",
    "TAG_RUN_KEY",
    "TAG_TASK",
    "LockTimeoutError",
    "archive_undecided_versions",
    "end_abandoned_runs",
    "migrate_store",
    "model_lock",
    "replace_earlier_tries",
    "store_lock",
    "CHAMPION",
    "DIGEST_LENGTH",
    "MODEL_ARTIFACT",
    "PREVIOUS_CHAMPION",
    "TAG_DATA_HASH",
    "TAG_INPUT_HASH",
    "TAG_METRIC_NAMES",
    "TAG_MODEL_TYPE",
    "TAG_MODEL_URI",
    "InputTable",
    "RunInfo",
    "TrackingError",
    "aliases",
    "apply_decision",
    "champion_uri",
    "check_store",
    "client",
    "decision_artifact",
    "get_champion",
    "get_run_summary",
    "get_version_summary",
    "list_registered_models",
    "list_run_artifacts",
    "list_training_runs",
    "load_model",
    "log_files",
    "log_model_run",
    "log_tuning",
    "mark_challenger",
    "metric_key",
    "model_type_of",
    "promote_manually",
    "read_run_artifact",
    "recommend_for_users",
    "register_model",
    "rollback",
    "set_alias",
    "set_version_tags",
    "setup",
    "version_by_alias",
]
