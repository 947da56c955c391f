"""The model registry: versions, the aliases that serve, and the decisions that move them.

The registry uses aliases, never stages: ``champion`` serves, ``challenger``
marks the version being judged against it, and ``previous_champion`` keeps
the one it replaced (:func:`apply_decision`). Every move, automatic or by
hand (:func:`rollback`, :func:`promote_manually`), leaves its decision record
on the version it concerns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from recsys import config
from recsys.constants import USER_COL
from recsys.data.prepare import pseudonymise_ids
from recsys.errors import NotFoundError, check_k
from recsys.promotion.decision import Decision, manual_decision, stale, to_markdown
from recsys.registry.locks import model_lock
from recsys.registry.pyfunc import MODEL_ARTIFACT
from recsys.registry.recovery import TAG_RUN_KEY, owner_tags
from recsys.registry.runs import (
    TAG_DATA_HASH,
    TAG_MODEL_TYPE,
    TAG_MODEL_URI,
    client,
    original_metric_names,
    setup,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
CHALLENGER = "challenger"


def register_model(run_id_or_model_uri: str, name: str | None = None) -> int:
    """Register a logged model as a new version of ``name``.

    Args:
        run_id_or_model_uri: a run id (its ``model`` artifact is registered)
            or any model URI (``models:/m-...``, ``runs:/ID/model``).
        name: registered model name; defaults to :func:`recsys.config.model_name`.

    Returns:
        The version number. The run's ``recsys.model_type``, ``recsys.data_hash``
        and ``recsys.run_key`` tags are copied onto the version, which also
        names the process that registered it (``recsys.owner.*``, see
        :mod:`recsys.registry.recovery`). Registering the
        same run id again returns its existing version, so a retried task
        never creates a second version of one run.
    """
    import mlflow

    setup()
    name = name or config.model_name()
    if ":/" not in run_id_or_model_uri:
        existing = client().search_model_versions(
            f"name = '{name}' and run_id = '{run_id_or_model_uri}'"
        )
        if existing:
            return min(int(v.version) for v in existing)
    uri = _model_uri_of(run_id_or_model_uri)
    # Who registered it and for which run, set with the version itself: a process
    # killed before the decision leaves a version the next run can tell apart.
    tags = {**_copied_run_tags(run_id_or_model_uri), **owner_tags()}
    with contextlib.redirect_stderr(io.StringIO()):  # its own "Successfully registered" lines
        version = mlflow.register_model(uri, name, tags=tags)
    if ":/" in run_id_or_model_uri and version.run_id:
        set_version_tags(name, int(version.version), _copied_run_tags(version.run_id))
    log.info("registered %s as %s version %s", uri, name, version.version)
    return int(version.version)


#: Run tags every registered version carries too.
_COPIED_TAGS = (TAG_MODEL_TYPE, TAG_DATA_HASH, TAG_RUN_KEY)


def _copied_run_tags(run_id_or_model_uri: str) -> dict[str, str]:
    """The tags of :data:`_COPIED_TAGS` a run has (none for a model URI)."""
    if ":/" in run_id_or_model_uri:
        return {}
    run_tags = client().get_run(run_id_or_model_uri).data.tags
    return {t: run_tags[t] for t in _COPIED_TAGS if t in run_tags}


def _model_uri_of(run_id_or_model_uri: str) -> str:
    """A model URI as is; for a run id, the model that :func:`log_model_run` logged."""
    if ":/" in run_id_or_model_uri:
        return run_id_or_model_uri
    tags = client().get_run(run_id_or_model_uri).data.tags
    return tags.get(TAG_MODEL_URI) or f"runs:/{run_id_or_model_uri}/{MODEL_ARTIFACT}"


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version``."""
    client().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: int | str, tags: Mapping[str, Any]) -> None:
    """Set (or overwrite) tags on one model version; values are stored as strings."""
    registry = client()
    for key, value in tags.items():
        registry.set_model_version_tag(name, str(version), key, str(value))


def version_by_alias(name: str, alias: str) -> Any | None:
    """The ``ModelVersion`` that ``alias`` points at, or ``None`` (no model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def get_champion(name: str | None = None) -> dict[str, Any] | None:
    """The current champion of ``name``, or ``None`` when there is none yet.

    Returns:
        ``version`` (int), ``run_id``, ``model_type``, ``metrics`` (under the
        names they were logged with, e.g. ``ndcg@10``), ``tags`` (the
        version's tags), ``run_tags`` (the training run's tags) and
        ``model_uri`` (``models:/NAME/VERSION``).
    """
    setup()
    name = name or config.model_name()
    version = version_by_alias(name, CHAMPION)
    if version is None:
        return None
    run = client().get_run(version.run_id) if version.run_id else None
    metrics = original_metric_names(run) if run else {}
    run_tags = run.data.tags if run else {}
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "model_type": version.tags.get(TAG_MODEL_TYPE) or run_tags.get(TAG_MODEL_TYPE),
        "metrics": metrics,
        "tags": dict(version.tags),
        "run_tags": dict(run_tags),
        "model_uri": f"models:/{name}/{version.version}",
    }


def champion_uri(name: str | None = None) -> str:
    """``models:/NAME@champion``, the URI that always serves the current champion."""
    return f"models:/{name or config.model_name()}@{CHAMPION}"


def load_model(uri: str) -> Any:
    """Load a logged or registered model as an MLflow pyfunc model."""
    import mlflow.pyfunc

    setup()
    return mlflow.pyfunc.load_model(uri)


def recommend_for_users(
    user_ids: Iterable[Any],
    k: int = 10,
    model_uri: str | None = None,
    answers: dict[str, Any] | None = None,
    pseudonymise: bool = True,
    name: str | None = None,
) -> pd.DataFrame:
    """Top-``k`` recommendations for ``user_ids`` from the champion (or ``model_uri``).

    The model is loaded on every call, so a moved alias takes effect at once.

    Args:
        user_ids: the users to serve.
        k: list length.
        model_uri: a model other than the champion.
        answers: an onboarding answer given to every unknown user of the call
            (``liked_items``, ``liked_genres``, ``age``, ``gender``,
            ``occupation``); known users are served by the model regardless.
        pseudonymise: with ``RECSYS_PSEUDONYM_KEY`` set (models then know
            pseudonyms only), ask the model for each id's pseudonym and answer
            under the id given; ``False`` for ids that are pseudonyms already.
        name: the registered model whose champion answers (default
            :func:`recsys.config.model_name`).

    Returns:
        The long table ``user_id, item_id, score, rank, served_by``; unknown
        users are served by the cold-start chain (``served_by`` names its path).
    """
    k = check_k(k)
    model = load_model(model_uri or champion_uri(name))
    ids = list(user_ids)
    key = config.pseudonym_key() if pseudonymise else None
    asked = pseudonymise_ids(ids, key) if key else ids
    users = pd.DataFrame({USER_COL: asked})
    for column, value in (answers or {}).items():
        users[column] = [value] * len(users)
    out = model.predict(users, params={"k": k})
    if key:
        out[USER_COL] = out[USER_COL].map(dict(zip(asked, ids, strict=True)))
    return out


def _with_versions(decision: Decision, candidate: int | str, champion: Any | None) -> Decision:
    """``decision`` with the registry versions filled in where the caller left them out."""
    fill: dict[str, int] = {}
    if decision.candidate_version is None:
        fill["candidate_version"] = int(candidate)
    if decision.champion_version is None and champion is not None:
        fill["champion_version"] = int(champion.version)
    return dataclasses.replace(decision, **fill) if fill else decision


def decision_artifact(name: str, version: int | str) -> str:
    """Artifact path, inside the candidate's run, of the decision on ``name`` ``version``."""
    return f"promotion/{name}-v{version}.json"


#: ``expected_champion`` of :func:`apply_decision` when the caller leaves it out.
FROM_DECISION: Any = object()
_UNCHECKED: Any = object()


def apply_decision(
    name: str | None,
    candidate_version: int | str,
    decision: Decision,
    *,
    expected_champion: int | None | Any = FROM_DECISION,
) -> Decision:
    """Record ``decision`` on the candidate version and move aliases if it promotes.

    The whole step runs under the promotion lock of ``name``
    (:func:`recsys.registry.locks.model_lock`), and it is a compare-and-set on the
    champion: inside the lock the ``champion`` alias is read again, and a
    decision made against another champion than the one found (promote or
    hold: it judged the wrong champion either way) is recorded as
    :func:`recsys.promotion.decision.stale` (held; the caller may decide again
    against the new champion) instead of moving any alias.

    Always: the decision's tags (``recsys.decision.*``) go on the candidate version
    and ``promotion/<name>-v<version>.json`` on the candidate's run. On a
    promote: the old champion (if any, and not the candidate itself) becomes
    ``previous_champion`` and ``champion`` moves to the candidate. On a hold,
    no alias changes. Versions the decision leaves out are filled in from the
    registry before it is recorded.

    Args:
        name: registered model (default :func:`recsys.config.model_name`).
        candidate_version: the version decided on.
        decision: the verdict.
        expected_champion: the champion version the decision was made against
            (``None``: there was none). By default the decision's own
            ``champion_version``, or no champion for a ``first_run`` decision;
            a decision that names neither is applied to whichever champion holds.

    Returns:
        The decision as recorded: ``decision`` with its versions filled in, or
        its stale form (``decision.stale`` is then true).

    Raises:
        mlflow.exceptions.MlflowException: ``name`` has no such version.
        recsys.registry.locks.LockTimeoutError: the lock stayed busy.
    """
    setup()
    name = name or config.model_name()
    with model_lock(name):
        return _apply_locked(name, candidate_version, decision, expected_champion)


def _apply_locked(
    name: str, candidate_version: int | str, decision: Decision, expected: Any
) -> Decision:
    registry = client()
    version = registry.get_model_version(name, str(candidate_version))
    current = version_by_alias(name, CHAMPION)
    now = int(current.version) if current is not None else None
    expected = _expected_champion(decision, expected)
    if (
        expected is not _UNCHECKED
        and now != (None if expected is None else int(expected))
        and now != int(version.version)
    ):
        decision = stale(decision, now)
        log.warning("%s version %s: %s", name, version.version, decision.reason)
    decision = _with_versions(decision, version.version, current)
    set_version_tags(name, version.version, decision.as_tags())
    if version.run_id:
        _log_decision(registry, version.run_id, decision, decision_artifact(name, version.version))
    if not decision.promote:
        log.info("%s version %s held: %s", name, version.version, decision.reason)
        return decision
    if current is not None and int(current.version) != int(version.version):
        set_alias(name, PREVIOUS_CHAMPION, current.version)
    set_alias(name, CHAMPION, version.version)
    challenger = version_by_alias(name, CHALLENGER)
    if challenger is not None and int(challenger.version) == int(version.version):
        registry.delete_registered_model_alias(name, CHALLENGER)
    log.info("%s version %s is champion: %s", name, version.version, decision.reason)
    return decision


def _expected_champion(decision: Decision, expected: Any) -> Any:
    """The champion version a decision must still find, or :data:`_UNCHECKED`."""
    if expected is not FROM_DECISION:
        return expected
    if decision.champion_version is not None:
        return decision.champion_version
    return None if decision.kind == "first_run" else _UNCHECKED


def _log_decision(registry: Any, run_id: str, decision: Decision, path: str) -> None:
    """The decision as JSON at ``path`` and as Markdown beside it."""
    registry.log_dict(run_id, decision.to_dict(), path)
    registry.log_text(run_id, to_markdown(decision), path.removesuffix(".json") + ".md")


def mark_challenger(name: str | None, version: int | str) -> None:
    """Point ``challenger`` at the version now being judged against the champion."""
    setup()
    set_alias(name or config.model_name(), CHALLENGER, version)


def aliases(name: str | None = None) -> dict[str, int]:
    """Which version each of ``champion``, ``challenger``, ``previous_champion`` points at."""
    setup()
    name = name or config.model_name()
    found = {
        alias: version_by_alias(name, alias) for alias in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)
    }
    return {alias: int(v.version) for alias, v in found.items() if v is not None}


def rollback(name: str | None = None, reason: str = "rollback") -> Decision:
    """Move ``champion`` back to ``previous_champion``; the demoted version becomes previous.

    Both aliases are read under the promotion lock, so a rollback never races a
    promotion. Leaves a manual decision record on the restored version.

    Raises:
        NotFoundError: there is no champion or no previous champion.
    """
    setup()
    name = name or config.model_name()
    with model_lock(name):
        current = version_by_alias(name, CHAMPION)
        previous = version_by_alias(name, PREVIOUS_CHAMPION)
        if current is None or previous is None:
            raise NotFoundError(
                f"'{name}' has no champion and previous_champion to roll back between"
            )
        decision = manual_decision("rollback", int(previous.version), int(current.version), reason)
        return _apply_locked(name, previous.version, decision, int(current.version))


def promote_manually(version: int, reason: str, name: str | None = None) -> Decision:
    """Make ``version`` the champion by hand (the old one becomes ``previous_champion``).

    Runs under the promotion lock, like :func:`apply_decision`.

    Raises:
        NotFoundError: ``version`` does not exist.
    """
    from mlflow.exceptions import MlflowException

    setup()
    name = name or config.model_name()
    try:
        client().get_model_version(name, str(version))
    except MlflowException:
        raise NotFoundError(f"'{name}' has no version {version}") from None
    with model_lock(name):
        current = version_by_alias(name, CHAMPION)
        now = int(current.version) if current else None
        decision = manual_decision("manual_promote", int(version), now, reason)
        return _apply_locked(name, version, decision, now)
