"""
### recsys_forget — the right to erasure: forget one user everywhere

Trigger it with the user's id (**user_id**, as the data holds it) and,
optionally, why (**reason**). In this order it

1. puts the user on the forgotten-users list (a salted hash, not the id): the
   champion answers them through the cold-start path from the next request on;
2. rewrites every partition of the interaction store without their rows (each
   file atomically: a crash mid-way loses no other row) and drops their
   demographics;
3. removes their rows from every run folder (the latest batch recommendations
   included) and their serving-cache entries (Redis, every model and version);
4. appends an audit entry (`$RECSYS_HOME/privacy/audit.jsonl`): the salted
   hash, the time, the reason with the id replaced by `[user]`, and the rows
   removed from each place.

Then it updates the `recsys_interactions` Asset, so `recsys_monitor` sees a
champion that still knows a forgotten user and requests retraining; the next
champion is trained without them. Running it again for the same user removes
nothing more and says so. Airflow itself keeps the run's params (the id) in
its metadata database: delete the DAG run once it succeeded.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from recsys.config import time_limit
from recsys.errors import fail_fast_as

INTERACTIONS = Asset("recsys_interactions")

#: Fails a task at once, its retries unspent, on an error a retry cannot fix
#: (bad input or state: a non-retryable ``recsys.errors.RecsysError``).
_fail_fast = fail_fast_as(AirflowFailException)


@dag(
    dag_id="recsys_forget",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=time_limit("RECSYS_FORGET_TIMEOUT_HOURS", 4, "hours"),
    default_args={
        "execution_timeout": time_limit("RECSYS_TASK_TIMEOUT_MINUTES", 120),
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
    },
    tags=["recsys", "privacy"],
    doc_md=__doc__,
    params={
        "user_id": Param(
            type="string",
            minLength=1,
            title="User id",
            description="The id of the user to forget, exactly as the interaction data holds it.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason",
            description="Why (recorded in the audit; the id is replaced by [user] there).",
        ),
    },
)
def recsys_forget():
    @task(doc_md="Erase the user from the store, run folders and cache; block their lists.")
    @_fail_fast
    def forget() -> dict:
        from recsys import pipeline

        ctx = get_current_context()
        dag_run = ctx["dag_run"]
        moment = dag_run.logical_date or dag_run.run_after
        entry = pipeline.forget_user(
            ctx["params"]["user_id"], reason=ctx["params"]["reason"], now=moment.timestamp()
        )
        return {"subject": entry["subject"], "counts": entry["counts"]}

    @task(
        outlets=[INTERACTIONS],
        doc_md="Update `recsys_interactions`, so monitoring requests the retraining.",
    )
    @_fail_fast
    def publish(erased: dict) -> str:
        get_current_context()["outlet_events"][INTERACTIONS].extra = {
            "erased_rows": erased["counts"]["store"]["removed"]
        }
        return erased["subject"]

    publish(forget())


recsys_forget()
