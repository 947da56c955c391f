"""The pipeline: the steps every Airflow task and ``recsys train`` call, and their run folder.

- :mod:`~recsys.pipeline.steps`: one function per task (validate, prepare,
  build features, tune, train, evaluate, promote, recommend, ingest);
- :mod:`~recsys.pipeline.runfolder`: :class:`RunFolder`, the one place that
  knows the run folder's layout;
- :mod:`~recsys.pipeline.reports`: the leaderboard table and chart, model plots;
- :mod:`~recsys.pipeline.local`: :func:`run_pipeline`, every step in-process;
- :mod:`~recsys.pipeline.benchmark`: ``recsys benchmark``.

The step functions are importable from here, as DAG tasks use them
(``from recsys import pipeline; pipeline.train_model(...)``).
"""

from recsys.pipeline.local import PipelineOptions, run_pipeline
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
    "evaluate_candidates",
    "feature_inputs",
    "ingest",
    "load_training_data",
    "new_interactions",
    "prepare_data",
    "promote",
    "read_feature_summary",
    "recommend_all",
    "run_pipeline",
    "train_model",
    "tune_model",
    "validate_data",
    "write_related_items",
]
