"""
### recsys_training — retrain, evaluate and promote recommenders

Each run reads interactions from **data_path**, checks them against the Great
Expectations suites in `expectations/`, splits them, builds and validates the
feature tables of the training split, trains one model per task
in parallel (each an MLflow run), scores every candidate and the current
champion on the same test split, moves the registry alias `champion` only when
the best candidate passes the promotion gate (gain of at least **margin**, a
bootstrap interval above zero, coverage and slice guardrails, a load check),
and writes the champion's top-K for every user.

It runs whenever `recsys_monitor` finds that drift, decay or an erasure calls
for it (the `recsys_retrain` Asset), and daily as a fallback; it skips itself
when fewer than **min_new_interactions** arrived since the champion was trained.

| task | does |
|---|---|
| `check_new_data` | stops the run early when too little new data arrived |
| `validate` | loads the input; a failing batch stops the run and is quarantined |
| `prepare` | de-duplicates and splits into train / test (protocol) |
| `build_features` | user profiles, item features, sequences (**max_sequence_length**), \
content vectors from train; each checked by its suite, then Parquet in `features/` |
| `tune` | one mapped instance per model: Optuna on a validation carve of train \
(**tuning_trials**, 0 = defaults), each trial a nested MLflow run |
| `train_<model>` | fits one model with its tuned parameters and the feature tables, \
logs it to MLflow with the tables as dataset inputs (skipped when not selected) |
| `evaluate` | leaderboard (table + bar chart) of candidates + the champion on the same holdout |
| `promote` | the promotion gate: margin, paired bootstrap, coverage and slice guardrails, \
load check; records the decision |
| `recommend` | batch top-K for every user from the champion, optionally re-ranked \
against popularity (**rerank_strength**) → Parquet |

Outputs live in `$RECSYS_HOME/runs/<run_id>/`; a rerun overwrites them.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from recsys.config import time_limit
from recsys.errors import fail_fast_as

# The model registry's names only: importing it loads no numerical library.
from recsys.models import DEFAULT_MODELS as DEFAULT_MODEL_NAMES
from recsys.models import available_models

#: The one schema of run options (light: no numerical library either); the CLI's
#: flags obey the same rules.
from recsys.options import check_dag_params, param_schema

#: Every model the DAG can train, one task each, and those a run trains unless
#: its params say otherwise: both from the model registry (recsys.models).
MODELS = available_models()
DEFAULT_MODELS = list(DEFAULT_MODEL_NAMES)

#: How the trigger form names each model.
MODEL_LABELS = {
    "popularity": "popularity (the most popular unseen items; baseline)",
    "itemknn": "itemknn (item-based nearest neighbours, cosine)",
    "als": "als (implicit-feedback matrix factorisation)",
    "ease": "ease (closed-form item-item autoencoder)",
    "content": "content (TF-IDF of titles, genres and years)",
    "ranker": "ranker (XGBoost ranks the other models' candidates)",
    "attention": "attention (SASRec-style self-attention; takes minutes)",
    "spark_als": "spark_als (ALS on Spark MLlib; for RECSYS_ENGINE=spark)",
}

#: Updated by recsys_monitor when drift, decay or an erasure calls for retraining.
RETRAIN = Asset("recsys_retrain")

#: Runs when the evidence says so, and on a cron as a fallback.
SCHEDULE = AssetOrTimeSchedule(
    timetable=CronTriggerTimetable(
        os.environ.get("RECSYS_TRAINING_SCHEDULE", "@daily"), timezone="UTC"
    ),
    assets=[RETRAIN],
)

#: Fails a task at once, its retries unspent, on an error a retry cannot fix
#: (bad input or state: a non-retryable ``recsys.errors.RecsysError``).
_fail_fast = fail_fast_as(AirflowFailException)


def _run_key() -> str:
    return get_current_context()["run_id"]


@dag(
    dag_id="recsys_training",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=time_limit("RECSYS_TRAINING_TIMEOUT_HOURS", 8, "hours"),
    default_args={
        "execution_timeout": time_limit("RECSYS_TASK_TIMEOUT_MINUTES", 120),
        "retries": 2,
        "retry_delay": timedelta(seconds=int(os.environ.get("RECSYS_RETRY_DELAY_SECONDS", "30"))),
    },
    tags=["recsys", "training"],
    doc_md=__doc__,
    params={
        # A type list holding "null" is what the trigger form shows as optional.
        "data_path": Param(
            os.environ.get("RECSYS_DATA_PATH") or None,
            type=["null", "string"],
            title="Data path",
            description="File or folder of interactions (MovieLens, CSV, TSV, Parquet, or the "
            "store recsys_ingest fills). Empty = $RECSYS_DATA_PATH of the workers.",
        ),
        "data_format": Param(
            "auto",
            **param_schema("data_format"),
            title="Data format",
            description="How to read the data path; auto detects it from the file names.",
        ),
        # `examples` at the top level makes the form a multi-select; `items` validates.
        "models": Param(
            DEFAULT_MODELS,
            **param_schema("models"),
            values_display=MODEL_LABELS,
            title="Models",
            description="Recommenders to train this run, one task each; the others are skipped.",
        ),
        "protocol": Param(
            "temporal",
            **param_schema("protocol"),
            title="Split protocol",
            description="How the test set is held out: temporal = the latest 20% of all "
            "events, msr = a random quarter of each item's, loo = each user's "
            "last one, stratified = a random quarter of each user's, random = "
            "a random 20% of each user's.",
        ),
        "k": Param(
            10,
            **param_schema("k"),
            title="Top-K",
            description="Length of every recommendation list, and the K of the metrics.",
        ),
        "min_new_interactions": Param(
            int(os.environ.get("RECSYS_MIN_NEW_INTERACTIONS", "0")),
            **param_schema("min_new_interactions"),
            title="Minimum new interactions",
            description="Skip the run when fewer new interactions arrived since the "
            "champion was trained.",
        ),
        "margin": Param(
            0.0,
            **param_schema("margin"),
            title="Promotion margin",
            description="How much NDCG@K must improve to replace the champion.",
        ),
        "tuning_trials": Param(
            int(os.environ.get("RECSYS_TUNING_TRIALS", "0")),
            **param_schema("tuning_trials"),
            title="Tuning trials per model",
            description="Optuna trials on a validation carve of train; 0 keeps defaults.",
        ),
        "rerank_strength": Param(
            0.0,
            **param_schema("rerank_strength"),
            title="Popularity re-ranking",
            description="Divide each candidate's score by (1 + popularity)^strength before "
            "writing the top-K; 0 keeps the champion's order. On ML-100K, 0.45 "
            "cut average popularity by a third at no loss of NDCG@10.",
        ),
        "tuning_timeout_s": Param(
            600,
            **param_schema("tuning_timeout_s"),
            title="Tuning time budget (s) per model",
            description="Optuna stops a model's tuning after this many seconds.",
        ),
        "max_sequence_length": Param(
            50,
            **param_schema("max_sequence_length"),
            title="Sequence length",
            description="Latest interactions kept per user in the sequences feature table.",
        ),
        "model_name": Param(
            None,
            **param_schema("model_name"),
            title="Registered model",
            description="The MLflow registered model this run trains into. Empty = the data's "
            "own: $RECSYS_MODEL_NAME (recsys) for $RECSYS_DATA_PATH, recsys-<name> for other "
            "data, so each data set keeps its own champion.",
        ),
    },
)
def recsys_training():
    @task.short_circuit(
        doc_md="Check every param (the CLI's rules), then go on only when enough new "
        "interactions have arrived."
    )
    @_fail_fast
    def check_new_data() -> bool:
        from recsys import config, pipeline
        from recsys.errors import InputError

        params = get_current_context()["params"]
        try:
            check_dag_params(dict(params))
        except InputError as err:  # a wrong param never succeeds on a retry
            raise AirflowFailException(f"recsys_training: {err}") from None
        fmt = None if params["data_format"] == "auto" else params["data_format"]
        counts = pipeline.new_interactions(
            params["data_path"] or config.data_path(), fmt, model_name=params["model_name"]
        )
        logging.getLogger("recsys").info("new interactions since the champion: %s", counts)
        return counts["new"] >= params["min_new_interactions"] and counts["rows"] > 0

    @task(doc_md="Load the input and run the expectation suites; quarantine a bad batch.")
    @_fail_fast
    def validate() -> dict:
        from recsys import config, pipeline

        ctx = get_current_context()
        params = ctx["params"]
        dag_run = ctx["dag_run"]
        moment = dag_run.logical_date or dag_run.run_after
        fmt = None if params["data_format"] == "auto" else params["data_format"]
        return pipeline.validate_data(
            _run_key(),
            params["data_path"] or config.data_path(),
            data_format=fmt,
            now=moment.timestamp(),
            model_name=params["model_name"],
        )

    @task(doc_md="Clean and split the validated interactions.")
    @_fail_fast
    def prepare(validated: dict) -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        return pipeline.prepare_data(_run_key(), protocol=params["protocol"])

    @task(doc_md="Build the feature tables of train, validate each, write them as Parquet.")
    @_fail_fast
    def build_features(split: dict) -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        return pipeline.build_features(_run_key(), max_len=params["max_sequence_length"])

    @task(doc_md="Tune one model on a validation carve of train (one mapped instance each).")
    @_fail_fast
    def tune(features: dict, model_name: str) -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        if model_name not in params["models"]:
            return {"model": model_name, "params": {}, "selected": False}
        return pipeline.tune_model(
            _run_key(),
            model_name,
            n_trials=params["tuning_trials"],
            timeout_s=params["tuning_timeout_s"],
            k=params["k"],
        )

    def train_task(name: str):
        @task(
            task_id=f"train_{name}",
            doc_md=f"Fit `{name}` with its tuned parameters (from the run folder) and log it "
            "as an MLflow run.",
            # The ranker trains after the other models (those not chosen are skipped):
            # it takes their fits in place of its generators of the same settings.
            trigger_rule="none_failed_min_one_success" if name == "ranker" else "all_success",
        )
        @_fail_fast
        def train() -> dict:
            from recsys import pipeline

            params = get_current_context()["params"]
            if name not in params["models"]:
                raise AirflowSkipException(f"{name} is not among this run's models")
            # Every model of the run: the ranker fuses the sequential ones among them.
            return pipeline.train_model(
                _run_key(), name, k=params["k"], models=list(params["models"])
            )

        return train

    @task(
        trigger_rule="none_failed_min_one_success",
        doc_md="Score every candidate and the champion on the same test split.",
    )
    @_fail_fast
    def evaluate() -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        return pipeline.evaluate_candidates(_run_key(), params["models"], k=params["k"])

    @task(doc_md="Register the best candidate; move `champion` when it wins by the margin.")
    @_fail_fast
    def promote(evaluation: dict) -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        return pipeline.promote(_run_key(), evaluation, margin=params["margin"])

    @task(doc_md="Write the champion's top-K for every user to Parquet.")
    @_fail_fast
    def recommend(decision: dict) -> dict:
        from recsys import pipeline

        params = get_current_context()["params"]
        return pipeline.recommend_all(
            _run_key(), k=params["k"], rerank_strength=params["rerank_strength"]
        )

    validated = validate()
    check_new_data() >> validated
    features = build_features(prepare(validated))
    tuned = tune.partial(features=features).expand(model_name=MODELS)
    # Each train task reads its own tuned parameters from the run folder, so none
    # has to page through every mapped tune result over XCom.
    trained = {name: train_task(name)() for name in MODELS}
    tuned >> list(trained.values())
    if "ranker" in trained:
        [t for name, t in trained.items() if name != "ranker"] >> trained["ranker"]
    evaluation = evaluate()
    list(trained.values()) >> evaluation
    recommend(promote(evaluation))


recsys_training()
