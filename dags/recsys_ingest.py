"""
### recsys_ingest — land new interaction batches in the interaction store

Every file or folder dropped into the landing folder (`$RECSYS_LANDING`,
default `$RECSYS_HOME/landing`) is one batch, taken once it is complete (a
`<name>.done` or `_SUCCESS` marker, or unchanged for
`$RECSYS_INGEST_SETTLE_SECONDS`). Each batch is validated on its own by the
Great Expectations suites, then checked against the store under its lock
(the same step as `recsys ingest`, safe beside it):

- new rows are appended to the store (`$RECSYS_DATA_PATH`, partitioned by
  arrival date); rows the store already holds are dropped and counted in its
  manifest;
- rejected batches (failed suites, ids or timestamps unlike the store's,
  symbolic links) go to `$RECSYS_HOME/quarantine/<batch>/` with the reason;
  `recsys ingest --replay <batch> --drop-invalid` takes their good rows back.

When at least one batch was accepted the `recsys_interactions` Asset is
updated, which schedules `recsys_training`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from recsys.config import time_limit
from recsys.errors import fail_fast_as

INTERACTIONS = Asset("recsys_interactions")

#: Fails a task at once, its retries unspent, on an error a retry cannot fix
#: (bad input or state: a non-retryable ``recsys.errors.RecsysError``).
_fail_fast = fail_fast_as(AirflowFailException)


@dag(
    dag_id="recsys_ingest",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=time_limit("RECSYS_INGEST_TIMEOUT_HOURS", 1, "hours"),
    default_args={
        "execution_timeout": time_limit("RECSYS_TASK_TIMEOUT_MINUTES", 30),
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
    },
    tags=["recsys", "ingest"],
    doc_md=__doc__,
)
def recsys_ingest():
    @task(doc_md="Validate each landed batch; append it to the store or quarantine it.")
    @_fail_fast
    def ingest() -> dict:
        from recsys import pipeline

        dag_run = get_current_context()["dag_run"]
        moment = dag_run.logical_date or dag_run.run_after
        return pipeline.ingest(arrival=moment.strftime("%Y-%m-%d"), now=moment.timestamp())

    @task(
        outlets=[INTERACTIONS],
        doc_md="Update the `recsys_interactions` Asset when new rows were accepted.",
    )
    @_fail_fast
    def publish(result: dict) -> int:
        if not result["new_rows"]:
            raise AirflowSkipException("no new interactions accepted")
        get_current_context()["outlet_events"][INTERACTIONS].extra = {
            "new_rows": result["new_rows"]
        }
        return result["new_rows"]

    publish(ingest())


recsys_ingest()
