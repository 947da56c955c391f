"""Run the training DAG once with ``airflow dags test`` and show a person what happens.

``make demo`` calls this. Airflow's own output (hundreds of lines) goes to the
log file; the terminal gets one line per task as it starts and ends, with its
duration and state, then the gate's decision and what to do next.

Usage: ``python scripts/demo_run.py LOG_FILE [DAG_ID]``; exits non-zero when
the run did not succeed (the log's last lines are printed then).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

STARTING = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
ENDED = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
STATE = re.compile(r"new_state=(\w+)")
SKIPPED = re.compile(r"task_id=(\S+).*(?:Skipping|skipped)", re.IGNORECASE)
FINISHED = re.compile(r"DagRun Finished.*state=(\w+)")
PROGRESS = re.compile(r"\]\s+(.*?)\s+\[recsys\.progress\]")
RUN_ID = re.compile(r"(manual__[^\s,>]+)")


def main(log_path: str, dag_id: str = "recsys_training") -> int:
    airflow = Path(sys.executable).with_name("airflow")
    started: dict[str, float] = {}
    state: dict[str, str] = {}
    run_state, run_id = None, None
    begin = time.perf_counter()
    print(f"running {dag_id} with airflow dags test (Airflow's log: {log_path})", flush=True)
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            [str(airflow), "dags", "test", dag_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        for line in proc.stdout:
            log.write(line)
            run_id = run_id or _first(RUN_ID, line)
            if match := STARTING.search(line):
                task = _task(*match.groups())
                started[task] = time.perf_counter()
                print(f"  {_clock(begin)}  ▶ {task}", flush=True)
            elif match := STATE.search(line):
                current = [t for t in started if t not in state]
                if current:
                    state[current[-1]] = match.group(1)
            elif match := ENDED.search(line):
                task = _task(*match.groups())
                took = time.perf_counter() - started.get(task, time.perf_counter())
                verdict = state.get(task, "done")
                mark = {"success": "✓", "skipped": "–", "failed": "✗"}.get(verdict, "•")
                print(f"  {_clock(begin)}  {mark} {task} {verdict} in {took:.1f}s", flush=True)
            elif match := PROGRESS.search(line):
                print(f"  {_clock(begin)}      {match.group(1)}", flush=True)
            elif match := FINISHED.search(line):
                run_state = match.group(1)
    total = time.perf_counter() - begin
    if run_state != "success":
        tail = Path(log_path).read_text().splitlines()[-40:]
        print("\n".join(tail))
        print(f"the DAG run did not succeed (state {run_state}); the whole log: {log_path}")
        return 1
    print(f"the DAG run succeeded in {total / 60:.1f} min")
    _decision(run_id)
    return 0


def _decision(run_id: str | None) -> None:
    """The gate's decision of this run, in words, and what to do next."""
    from recsys.pipeline import RunFolder

    if run_id:
        decision = RunFolder(run_id).read_json_or_none("decision.json")
        if decision:
            verdict = "promoted" if decision["promote"] else "held"
            why = decision["reason"].split(": ", 1)[-1]
            print(f"gate: version {decision['candidate_version']} {verdict}: {why}")
    print(
        "next: make ui  (Airflow with the Recommender page: "
        "http://127.0.0.1:8080/plugin/recommender, sign in as admin)\n"
        "      .venv/bin/recsys recommend --user 42   ·   .venv/bin/recsys status"
    )


def _task(task_id: str, map_index: str) -> str:
    return task_id if map_index == "-1" else f"{task_id}[{map_index}]"


def _first(pattern: re.Pattern, line: str) -> str | None:
    match = pattern.search(line)
    return match.group(1) if match else None


def _clock(begin: float) -> str:
    seconds = int(time.perf_counter() - begin)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
