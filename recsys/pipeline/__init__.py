"""The pipeline: the steps every Airflow task and ``recsys train`` call, and their run folder.

- :mod:`~recsys.pipeline.steps`: one function per task (validate, prepare,
  build features, tune, train, evaluate, promote, recommend, ingest);
- :mod:`~recsys.pipeline.spark_steps`: the data steps' bodies under
  ``RECSYS_ENGINE=spark`` (the steps call them; same files out);
- :mod:`~recsys.pipeline.runfolder`: :class:`RunFolder`, the one place that
  knows the run folder's layout;
- :mod:`~recsys.pipeline.reports`: the leaderboard table and chart, model plots;
- :mod:`~recsys.pipeline.local`: :func:`run_pipeline`, every step in-process;
- :mod:`~recsys.pipeline.benchmark`: ``recsys benchmark``;
- :mod:`~recsys.pipeline.monitor`: drift and decay of each accepted batch, and
  the retraining decision (the ``recsys_monitor`` DAG, ``recsys monitor``);
- :mod:`~recsys.pipeline.privacy`: the right to erasure (the ``recsys_forget``
  DAG, ``recsys forget``).

The step functions are importable from here, as DAG tasks use them
(``from recsys import pipeline; pipeline.train_model(...)``).
"""

from recsys.pipeline.local import PipelineOptions, run_pipeline
from recsys.pipeline.monitor import decide_retraining, measure_batches, monitor, read_monitoring
from recsys.pipeline.privacy import forget_user
from recsys.pipeline.runfolder import RunFolder
from recsys.pipeline.steps import (
    build_features,
    evaluate_candidates,
    feature_inputs,
    ingest,
    load_training_data,
    new_interactions,
    prepare_data,
    promote,
    read_feature_summary,
    recommend_all,
    train_model,
    tune_model,
    validate_data,
    write_related_items,
)

__all__ = [
    "PipelineOptions",
    "RunFolder",
    "build_features",
    "decide_retraining",
    "evaluate_candidates",
    "feature_inputs",
    "forget_user",
    "ingest",
    "load_training_data",
    "measure_batches",
    "monitor",
    "new_interactions",
    "prepare_data",
    "promote",
    "read_feature_summary",
    "read_monitoring",
    "recommend_all",
    "run_pipeline",
    "train_model",
    "tune_model",
    "validate_data",
    "write_related_items",
]
