"""What the page says in words: metric labels, column order, promotion decisions.

Plain functions over plain dicts (a decision record as
:meth:`recsys.promotion.decision.Decision.to_dict` writes it, or the
``recsys.decision.*`` tags of a model version); nothing here reads storage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Accuracy metrics at a cut-off, in the order people read them.
ACCURACY = ("ndcg", "precision", "recall", "map", "hit_rate", "mrr")
#: Beyond-accuracy figures, in reading order.
BEYOND = (
    "novelty",
    "diversity",
    "avg_popularity",
    "gini",
    "long_tail_share",
    "catalogue_coverage",
    "user_coverage",
)
#: Counts and timings: last in every table, never drawn with the scores.
COUNTS = re.compile(r"^(n_|users$|train_seconds|score_seconds|evaluate_seconds|trial_seconds)")
#: Per-group figures (``slice.<grouping>.<group>.<metric>``): the heatmap's, not the table's.
SLICE = re.compile(r"^slice\.(?P<slicing>[^.]+)\.(?P<group>.+)\.(?P<metric>[a-z_]+@\d+)$")
_AT_K = re.compile(r"^(?P<name>[a-z_]+)@(?P<k>\d+)$")

_LABELS = {
    "ndcg": "NDCG",
    "map": "MAP",
    "mrr": "MRR",
    "hit_rate": "hit rate",
    "avg_popularity": "avg popularity",
    "long_tail_share": "long-tail share",
    "catalogue_coverage": "catalogue coverage",
    "user_coverage": "user coverage",
    "users": "users scored",
    "n_users_evaluated": "users evaluated",
    "n_cold_users": "cold users",
    "n_unknown_item_rows": "unknown-item rows",
    "train_seconds": "train s",
    "score_seconds": "score s",
    "evaluate_seconds": "evaluate s",
}

CHECK_TITLES = {
    "margin": "Margin check",
    "bootstrap": "Bootstrap check",
    "coverage": "Coverage check",
    "slices": "Slice check",
    "load": "Load check",
    "manual": "Decided by hand",
}


def metric_label(name: str) -> str:
    """``ndcg@10`` → ``NDCG@10``, ``gap.age_band.ndcg@10`` → ``gap age band (NDCG@10)``."""
    at_k = _AT_K.match(name)
    if at_k:
        return f"{_LABELS.get(at_k['name'], at_k['name'].replace('_', ' '))}@{at_k['k']}"
    for prefix, words in (("fairness_gap.", "fairness gap"), ("gap.", "gap")):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            grouping, _, metric = rest.rpartition(".") if "." in rest else ("", "", rest)
            where = f" {grouping.replace('_', ' ')}" if grouping else ""
            return f"{words}{where} ({metric_label(metric)})"
    slice_match = SLICE.match(name)
    if slice_match:
        return f"{slice_match['slicing'].replace('_', ' ')}: {slice_match['group']}"
    return _LABELS.get(name, name.replace("_", " "))


def column_rank(name: str) -> tuple[int, int, str]:
    """Sort key of a metric column: accuracy, coverage, beyond accuracy, gaps, other, counts."""
    at_k = _AT_K.match(name)
    if at_k and at_k["name"] in ACCURACY:
        return (0, ACCURACY.index(at_k["name"]), name)
    if name == "coverage":
        return (1, 0, name)
    if name in BEYOND:
        return (2, BEYOND.index(name), name)
    if name.startswith("fairness_gap."):
        return (3, 0, name)
    if name.startswith("gap."):
        return (3, 1, name)
    if COUNTS.match(name):
        return (6, 0, name)
    return (4, 0, name)


def order_columns(names: Iterable[str], primary: str | None = None) -> list[str]:
    """Table columns in reading order; slice figures are left out (the heatmap shows them).

    ``primary`` goes first among the accuracy metrics when it is one of them.
    """
    shown = {n for n in names if not SLICE.match(n)}
    ordered = sorted(shown, key=column_rank)
    if primary in shown and column_rank(primary)[0] == 0:
        ordered.remove(primary)
        ordered.insert(0, primary)
    return ordered


def format_number(value: object) -> str:
    """A metric for a table cell: whole numbers plainly, others to 4 decimals, ``—`` for none."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if value is None:
        return "—"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if not math.isfinite(value):
        return "—" if math.isnan(value) else str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):d}"
    return f"{value:.4f}"


# ------------------------------------------------------------------ decisions
def decision_from_tags(tags: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """A decision record rebuilt from a version's ``recsys.decision.*`` tags.

    Tags hold no check details: each ``check.<name>`` becomes a check with
    ``passed`` only. ``{}`` when the version carries no decision.
    """
    raw = {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}
    if not raw:
        return {}
    record: dict[str, Any] = {
        key: _tag_value(raw[key])
        for key in (
            "verdict",
            "metric",
            "reason",
            "kind",
            "margin",
            "candidate_score",
            "champion_score",
            "candidate_version",
            "champion_version",
        )
        if key in raw
    }
    record["promote"] = raw.get("verdict") == "promote"
    record["manual"] = raw.get("manual") == "true"
    record["checks"] = [
        {"name": key[len("check.") :], "passed": value == "pass"}
        for key, value in sorted(raw.items())
        if key.startswith("check.")
    ]
    return record


def _tag_value(text: str) -> Any:
    if text == "none":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def describe_decision(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A decision record in words, for people.

    Returns:
        ``None`` for no record; else ``promote`` (bool), ``headline`` (what
        happened), ``how`` (who or what decided), ``reason``, ``comparison``
        (the scores compared, or ``None``) and ``checks``
        (``[{"title", "passed", "text"}]``).
    """
    if not record:
        return None
    promote = bool(record.get("promote", record.get("verdict") == "promote"))
    return {
        "promote": promote,
        "headline": _headline(record, promote),
        "how": _how(record),
        "reason": _reason(record.get("reason")),
        "comparison": _comparison(record),
        "checks": [_check_words(c) for c in record.get("checks") or [] if isinstance(c, Mapping)],
    }


def _headline(record: Mapping[str, Any], promote: bool) -> str:
    kind = record.get("kind") or "gate"
    candidate = _version(record.get("candidate_version"))
    champion = _version(record.get("champion_version"))
    if kind == "first_run":
        if promote:
            return f"First champion: {candidate} had no earlier model to compare with"
        return f"Not promoted: {candidate} failed the checks a first champion must pass"
    if kind == "rollback":
        return f"Rolled back: {candidate} serves again in place of {champion}"
    if kind == "manual_promote":
        replaced = f" in place of {champion}" if record.get("champion_version") else ""
        return f"Promoted by hand: {candidate} serves{replaced}"
    if promote:
        return f"Promoted: {candidate} replaced {champion}"
    return f"Held: {candidate} did not beat {champion}, which keeps serving"


def _how(record: Mapping[str, Any]) -> str:
    kind = record.get("kind") or "gate"
    if record.get("manual") or kind in ("manual_promote", "rollback"):
        return "Decided by a person" + (" (rollback)" if kind == "rollback" else "")
    if kind == "first_run":
        return "Decided by the gate (first run: load check only, nothing to compare with)"
    return "Decided by the gate"


def _reason(reason: object) -> str | None:
    """The recorded reason without its ``promote:`` / ``hold:`` prefix (the headline says it)."""
    if not reason:
        return None
    text = str(reason)
    for prefix in ("promote: ", "hold: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    first = text.split(" ", 1)[0]
    return text if "@" in first or "_" in first else text[:1].upper() + text[1:]


def _comparison(record: Mapping[str, Any]) -> str | None:
    metric = record.get("metric")
    candidate, champion = record.get("candidate_score"), record.get("champion_score")
    if not metric or not _finite(candidate):
        return None
    text = f"{metric_label(str(metric))}: candidate {format_number(candidate)}"
    if _finite(champion):
        text += f" against champion {format_number(champion)}"
        text += f" (gain {candidate - champion:+.4f}"
        margin = record.get("margin")
        text += f", required {format_number(margin)})" if _finite(margin) else ")"
    return text


def _check_words(check: Mapping[str, Any]) -> dict[str, Any]:
    name = str(check.get("name", "check"))
    passed = bool(check.get("passed"))
    detail = check.get("detail")
    text = "passed" if passed else "FAILED"
    if detail:
        text += f" — {detail}"
    return {
        "title": CHECK_TITLES.get(name, f"{name.replace('_', ' ').capitalize()} check"),
        "passed": passed,
        "text": text,
    }


def _version(value: object) -> str:
    return f"version {value}" if value not in (None, "") else "the candidate"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
