"""What a killed or retried task leaves in MLflow, and how the next one cleans it up.

Every training run and every registered version records who made it (the
``recsys.owner.*`` tags: host, process id and that process's start time), and
every training run its run key and task (``recsys.run_key``, ``recsys.task``).
From those the next try or run can tell leftovers from work in progress:

- :func:`replace_earlier_tries`: the runs an earlier try of the *same* task
  (same run key) left are ended ``FAILED`` when still ``RUNNING`` and tagged
  ``recsys.replaced_by`` when finished, so each task keeps one current run;
- :func:`end_abandoned_runs`: a ``RUNNING`` run whose process is gone (same
  host, no such process any more) or that has run longer than any task may
  (``RECSYS_ABANDONED_AFTER_S``, the task timeout by default) is ended
  ``FAILED`` with ``recsys.end_reason`` saying why;
- :func:`archive_undecided_versions`: a version registered by another run that
  was killed before its decision was recorded is tagged ``recsys.archived``
  with the reason (and loses the ``challenger`` alias). A retry of the *same*
  run finishes it instead: registering the same MLflow run returns that
  version, and its decision is recorded then.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from recsys import config
from recsys.registry.runs import client, setup

log = logging.getLogger(__name__)

TAG_HOST = "recsys.owner.host"
TAG_PID = "recsys.owner.pid"
TAG_STARTED = "recsys.owner.started"
TAG_RUN_KEY = "recsys.run_key"
TAG_TASK = "recsys.task"
TAG_TRY = "recsys.try_number"
TAG_END_REASON = "recsys.end_reason"
TAG_REPLACED_BY = "recsys.replaced_by"
TAG_ARCHIVED = "recsys.archived"
TAG_VERDICT = "recsys.decision.verdict"


def owner_tags() -> dict[str, str]:
    """Tags naming this process: host, pid, start time (and the Airflow try, if any)."""
    import psutil

    tags = {
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(os.getpid()),
        TAG_STARTED: f"{psutil.Process().create_time():.3f}",
    }
    if os.environ.get("AIRFLOW_CTX_TRY_NUMBER"):
        tags[TAG_TRY] = os.environ["AIRFLOW_CTX_TRY_NUMBER"]
    return tags


def owner_gone(
    tags: dict[str, str], started_ms: int | None, now: float | None = None
) -> str | None:
    """Why the process that made something with ``tags`` cannot still be at work, or ``None``.

    Args:
        tags: the run's or version's tags (:func:`owner_tags`).
        started_ms: when it was created (MLflow milliseconds), for the age rule.
        now: the time to judge at (default: the clock).
    """
    import psutil

    now = time.time() if now is None else now
    age = now - (started_ms or 0) / 1000
    if started_ms is not None and age > config.abandoned_after_s():
        return f"still open after {age:.0f}s, longer than any task may run"
    if tags.get(TAG_HOST) != socket.gethostname() or TAG_PID not in tags:
        return None
    pid = int(tags[TAG_PID])
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return f"its process {pid} on {tags[TAG_HOST]} is gone"
    if abs(started - float(tags.get(TAG_STARTED, started))) > 1.0:
        return f"its process {pid} on {tags[TAG_HOST]} is gone (the pid is another's now)"
    return None


def _end(run: Any, status: str, reason: str) -> None:
    registry = client()
    registry.set_tag(run.info.run_id, TAG_END_REASON, reason)
    registry.set_terminated(run.info.run_id, status=status)
    log.warning("ended MLflow run %s %s: %s", run.info.run_id, status, reason)


def _search(filter_string: str) -> list[Any]:
    experiment = setup()
    return list(client().search_runs([experiment], filter_string=filter_string, max_results=1000))


def replace_earlier_tries(run_key: str, task: str, keep: str | None = None) -> list[str]:
    """End or mark the runs earlier tries of task ``task`` of run ``run_key`` left.

    ``RUNNING`` ones are ended ``FAILED``; with ``keep`` (the run of this try),
    finished ones other than it are tagged ``recsys.replaced_by = keep``.

    Returns:
        The ids of the runs changed.
    """
    found = _search(f"tags.`{TAG_RUN_KEY}` = '{_quoted(run_key)}' and tags.`{TAG_TASK}` = '{task}'")
    changed = []
    for run in found:
        if run.info.run_id == keep:
            continue
        if run.info.status == "RUNNING":
            _end(run, "FAILED", f"a later try of task {task} of run {run_key} replaced it")
            changed.append(run.info.run_id)
        elif keep and TAG_REPLACED_BY not in run.data.tags:
            client().set_tag(run.info.run_id, TAG_REPLACED_BY, keep)
            changed.append(run.info.run_id)
    return changed


def end_abandoned_runs(now: float | None = None) -> list[str]:
    """End ``FAILED`` every ``RUNNING`` recsys run whose process cannot still be at work.

    Returns:
        The ids of the runs ended.
    """
    ended = []
    for run in _search("attributes.status = 'RUNNING'"):
        why = owner_gone(run.data.tags, run.info.start_time, now)
        if why and (TAG_PID in run.data.tags or TAG_RUN_KEY in run.data.tags):
            _end(run, "FAILED", f"abandoned: {why}")
            ended.append(run.info.run_id)
    return ended


def archive_undecided_versions(
    name: str, run_key: str | None = None, now: float | None = None
) -> list[int]:
    """Archive versions of ``name`` registered by a run that died before deciding on them.

    A version without a ``recsys.decision.verdict`` tag is archived when the
    process that registered it is gone (:func:`owner_gone`), unless it belongs
    to run ``run_key`` (the caller's own, whose retry finishes it).

    Returns:
        The archived version numbers.
    """
    setup()
    registry = client()
    archived = []
    for version in _versions(name):
        tags = dict(version.tags)
        if TAG_VERDICT in tags or TAG_ARCHIVED in tags or TAG_PID not in tags:
            continue
        if run_key is not None and tags.get(TAG_RUN_KEY) == run_key:
            continue
        why = owner_gone(tags, version.creation_timestamp, now)
        if not why:
            continue
        reason = (
            f"registered by run {tags.get(TAG_RUN_KEY, '?')}, which ended before recording "
            f"a decision ({why}); archived by run {run_key or '?'}"
        )
        registry.set_model_version_tag(name, version.version, TAG_ARCHIVED, reason)
        _drop_challenger(name, int(version.version))
        log.warning("%s version %s archived: %s", name, version.version, reason)
        archived.append(int(version.version))
    return archived


def _versions(name: str) -> Iterable[Any]:
    return client().search_model_versions(f"name = '{_quoted(name)}'")


def _drop_challenger(name: str, version: int) -> None:
    from recsys.registry.aliases import CHALLENGER, version_by_alias

    held = version_by_alias(name, CHALLENGER)
    if held is not None and int(held.version) == version:
        client().delete_registered_model_alias(name, CHALLENGER)


def _quoted(text: str) -> str:
    return str(text).replace("'", "\\'")
