"""
### recsys_monitor — drift and decay of every accepted batch; retrain when the evidence says so

Runs whenever the `recsys_interactions` Asset is updated (`recsys_ingest`
accepted a batch, `recsys_forget` erased a user). Against the champion's
training data it measures each new batch of the interaction store:

| figure | what it says |
|---|---|
| item popularity PSI (and Jensen–Shannon distance) | the items people pick moved |
| user activity KS (and Wasserstein) | interactions per user changed |
| unknown users' / items' share | people or items the champion never saw |
| rating distribution JS | ratings changed |
| prequential hit rate / NDCG drop | how much worse the champion predicts today than at training |

Then the retraining policy decides, batch by batch: `retrain` when a figure
passes its threshold (or the champion still knows a forgotten user), unless
retraining was triggered within the cooldown (`defer`); `hold` when nothing
passed; `skip` when the data did not change. Every decision is recorded with
each figure and its threshold (`$RECSYS_HOME/monitor/<model>/`; the
Recommender page plots them). A `retrain` updates the `recsys_retrain`
Asset, which starts `recsys_training`.

Thresholds and the cooldown: `RECSYS_MONITOR_<SETTING>` (e.g.
`RECSYS_MONITOR_ITEM_PSI=0.25`, `RECSYS_MONITOR_COOLDOWN_HOURS=12`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from recsys.config import time_limit
from recsys.errors import fail_fast_as

INTERACTIONS = Asset("recsys_interactions")
RETRAIN = Asset("recsys_retrain")

#: Fails a task at once, its retries unspent, on an error a retry cannot fix
#: (bad input or state: a non-retryable ``recsys.errors.RecsysError``).
_fail_fast = fail_fast_as(AirflowFailException)


def _moment() -> float:
    dag_run = get_current_context()["dag_run"]
    return (dag_run.logical_date or dag_run.run_after).timestamp()


@dag(
    dag_id="recsys_monitor",
    schedule=[INTERACTIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=time_limit("RECSYS_MONITOR_TIMEOUT_HOURS", 2, "hours"),
    default_args={
        "execution_timeout": time_limit("RECSYS_TASK_TIMEOUT_MINUTES", 30),
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
    },
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
)
def recsys_monitor():
    @task(doc_md="Measure drift and decay of each new batch against the champion.")
    @_fail_fast
    def measure() -> dict:
        from recsys import pipeline

        return pipeline.measure_batches(now=_moment())

    @task(doc_md="Decide on each measured batch: retrain, hold, defer (cooldown) or skip.")
    @_fail_fast
    def decide(measured: dict) -> dict:
        from recsys import pipeline

        return pipeline.decide_retraining(model_name=measured["registered_model"], now=_moment())

    @task(outlets=[RETRAIN], doc_md="Update the `recsys_retrain` Asset when retraining is due.")
    @_fail_fast
    def request_training(decision: dict) -> str:
        if not decision["retrain"]:
            raise AirflowSkipException(f"{decision['action']}: {decision['reason']}")
        get_current_context()["outlet_events"][RETRAIN].extra = {"reason": decision["reason"]}
        return decision["reason"]

    request_training(decide(measure()))


recsys_monitor()
