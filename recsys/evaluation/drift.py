"""Drift and decay: how far a batch of new interactions is from a model's training data,
and how well the model predicts it.

Every measure compares one batch with a :class:`Reference` (the champion's
training interactions, as the pipeline split them) and returns plain
numbers; judging them against thresholds is the retraining policy's job
(:mod:`recsys.promotion.retrain`).

Drift (the data moved):

- ``item_psi``: population stability index of item popularity. Reference
  items are ranked by popularity and cut into ``bins`` groups of equal
  interaction mass (the head's few items, then ever longer stretches of the
  tail); PSI compares the share of the batch's interactions (on items the
  reference knows) falling in each group with the reference's. Grouping
  keeps PSI nearly free of the sampling noise a small batch has over a
  large catalogue; the usual reading is < 0.1 stable, 0.1–0.25 moving,
  > 0.25 shifted.
- ``item_js``: Jensen–Shannon distance (base 2, 0–1) between the two item
  distributions over every item, new ones included. Exact, but a small
  batch over a large catalogue reads as distant by sampling alone, so it is
  reported beside PSI, not instead of it.
- ``activity_ks`` / ``activity_wasserstein``: two-sample Kolmogorov–Smirnov
  statistic and Wasserstein distance between interactions per user in the
  batch and in an equally large slice of the reference (its latest rows by
  time), so both count the same span of activity.
- ``unknown_user_share`` / ``unknown_item_share``: share of the batch's
  interactions by users the model never saw, and on items nobody
  interacted with in its training data (a new-item surge).
- ``rating_js``: Jensen–Shannon distance between the rating distributions
  (their distinct values, or ten reference quantile bins for a continuous
  scale).

Decay (the model got worse), prequentially: the model's ``hit_rate@K`` and
``ndcg@K`` on the batch's interactions of users it knows (their items from
training excluded: they cannot be recommended again), compared with the same
figures on slices of the model's own test split of the batch's size.

The statistics are scipy's (``jensenshannon``, ``ks_2samp``,
``wasserstein_distance``, ``rel_entr`` for PSI): well kept and already a
dependency. Evidently would bring its own pinned stack for the same four
numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.errors import InputError

log = logging.getLogger(__name__)

#: Popularity groups of the PSI.
PSI_BINS = 10
#: Added to every share before PSI's logarithm (a group the batch never touches).
PSI_EPSILON = 1e-4
#: Below this many evaluable known users a batch's hit rate is not measured (too noisy).
MIN_PREQUENTIAL_USERS = 20
#: Slices of the test split the prequential baseline averages over.
BASELINE_SLICES = 3


@dataclass(frozen=True)
class Reference:
    """What batches are compared with.

    Attributes:
        train: the model's training interactions (``user_id, item_id, rating,
            timestamp``; the timestamp may be null).
        test: the held-out interactions of the same split, for the prequential
            baseline, or ``None``.
    """

    train: pd.DataFrame
    test: pd.DataFrame | None = None

    @property
    def known_users(self) -> pd.Index:
        return pd.Index(self.train[USER_COL].unique())

    @property
    def known_items(self) -> pd.Index:
        return pd.Index(self.train[ITEM_COL].unique())


# ---------------------------------------------------------------------- drift
def popularity_groups(reference_items: pd.Series, bins: int = PSI_BINS) -> pd.Series:
    """Item → popularity group (0 = head): equal shares of the reference's interactions.

    An item heavier than a group's share fills a group alone (so fewer than
    ``bins`` groups may exist).
    """
    counts = reference_items.value_counts(sort=True)
    before = (counts.cumsum() - counts) / counts.sum()
    return pd.Series(np.minimum((before * bins).astype(int), bins - 1), index=counts.index)


def item_psi(reference_items: pd.Series, batch_items: pd.Series, bins: int = PSI_BINS) -> float:
    """Population stability index of item popularity (see the module docstring).

    Items the reference does not know are left out (``unknown_item_share``
    measures them); ``nan`` when the batch has no known item.
    """
    from scipy.special import rel_entr

    groups = popularity_groups(reference_items, bins)
    expected = reference_items.map(groups).value_counts(normalize=True).sort_index()
    seen = batch_items.map(groups).dropna().astype(int)
    if seen.empty:
        return float("nan")
    actual = seen.value_counts(normalize=True).reindex(expected.index, fill_value=0.0)
    p = expected.to_numpy() + PSI_EPSILON
    q = actual.to_numpy() + PSI_EPSILON
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(rel_entr(q, p) + rel_entr(p, q)))


def distribution_js(reference: pd.Series, batch: pd.Series) -> float:
    """Jensen–Shannon distance (base 2) between the value distributions of two columns."""
    from scipy.spatial.distance import jensenshannon

    values = pd.Index(pd.concat([reference, batch]).unique())
    p = reference.value_counts().reindex(values, fill_value=0).to_numpy(dtype=float)
    q = batch.value_counts().reindex(values, fill_value=0).to_numpy(dtype=float)
    if not p.sum() or not q.sum():
        return float("nan")
    return float(jensenshannon(p, q, base=2))


def rating_js(reference: pd.Series, batch: pd.Series, max_values: int = 20) -> float:
    """Jensen–Shannon distance between rating distributions; a scale with more than
    ``max_values`` distinct values is cut into ten reference quantile bins first."""
    if reference.nunique() > max_values:
        edges = np.unique(np.quantile(reference.to_numpy(dtype=float), np.linspace(0, 1, 11)))
        edges[0], edges[-1] = -np.inf, np.inf
        reference = pd.Series(np.digitize(reference, edges[1:-1]))
        batch = pd.Series(np.digitize(batch, edges[1:-1]))
    return distribution_js(reference, batch)


def activity(reference: pd.DataFrame, batch: pd.DataFrame) -> dict[str, float]:
    """Interactions per user in the batch against an equally large, latest slice of the
    reference: ``activity_ks`` (statistic), ``activity_ks_pvalue``, ``activity_wasserstein``."""
    from scipy.stats import ks_2samp, wasserstein_distance

    window = _latest(reference, len(batch))
    ref = window[USER_COL].value_counts().to_numpy()
    new = batch[USER_COL].value_counts().to_numpy()
    test = ks_2samp(ref, new)
    return {
        "activity_ks": float(test.statistic),
        "activity_ks_pvalue": float(test.pvalue),
        "activity_wasserstein": float(wasserstein_distance(ref, new)),
    }


def _latest(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` latest rows by time (all of them when shorter; the last rows without time)."""
    if TIME_COL in frame and frame[TIME_COL].notna().all():
        frame = frame.sort_values(TIME_COL, kind="stable")
    return frame.iloc[-n:] if n < len(frame) else frame


def unknown_shares(batch: pd.DataFrame, reference: Reference) -> dict[str, float]:
    """Share of the batch's rows by users, and on items, the reference never saw."""
    return {
        "unknown_user_share": float((~batch[USER_COL].isin(reference.known_users)).mean()),
        "unknown_item_share": float((~batch[ITEM_COL].isin(reference.known_items)).mean()),
    }


def measure_drift(batch: pd.DataFrame, reference: Reference) -> dict[str, float]:
    """Every drift figure of the module docstring for one batch.

    Raises:
        InputError: an empty batch or reference.
    """
    if batch.empty or reference.train.empty:
        raise InputError("drift needs a batch and a reference with at least one interaction")
    train = reference.train
    return {
        "item_psi": item_psi(train[ITEM_COL], batch[ITEM_COL]),
        "item_js": distribution_js(train[ITEM_COL], batch[ITEM_COL]),
        **activity(train, batch),
        **unknown_shares(batch, reference),
        "rating_js": rating_js(train[RATING_COL].astype(float), batch[RATING_COL].astype(float)),
    }


# ---------------------------------------------------------------------- decay
def prequential(
    served: Any, batch: pd.DataFrame, k: int, *, min_users: int = MIN_PREQUENTIAL_USERS
) -> dict[str, float | None]:
    """The served model's ``hit_rate@k`` and ``ndcg@k`` on the batch's known users.

    Args:
        served: a :class:`recsys.serving.served.ServedRecommender`.
        batch: new interactions, ids as the model stores them.
        k: the cut-off.
        min_users: fewer evaluable users than this give ``None`` figures.

    Returns:
        ``{"hit_rate@k", "ndcg@k", "prequential_users"}``. A user counts when
        the model knows them (and they are not forgotten) and the batch holds
        at least one item they did not have in training.
    """
    from recsys.evaluation.holdout import evaluate_recommendations

    truth = _new_pairs_of_known_users(served, batch)
    users = truth[USER_COL].unique()
    out: dict[str, float | None] = {
        f"hit_rate@{k}": None,
        f"ndcg@{k}": None,
        "prequential_users": int(users.size),
    }
    if users.size < max(min_users, 1):
        return out
    recs = served.recommend(pd.DataFrame({USER_COL: users}), k)
    metrics = evaluate_recommendations(recs, truth, k, n_items=served.id_map.n_items)
    out[f"hit_rate@{k}"] = metrics[f"hit_rate@{k}"]
    out[f"ndcg@{k}"] = metrics[f"ndcg@{k}"]
    return out


def _new_pairs_of_known_users(served: Any, batch: pd.DataFrame) -> pd.DataFrame:
    pairs = batch[[USER_COL, ITEM_COL]].drop_duplicates()
    stored = served.id_map.match_user_ids(pairs[USER_COL].to_numpy())
    rows = served.id_map.user_index(stored)
    known = (rows >= 0) & ~served.forgotten_mask(stored)
    pairs, rows = pairs[known], rows[known]
    cols = served.id_map.item_index(pairs[ITEM_COL].to_numpy())
    seen = np.zeros(len(pairs), dtype=bool)
    on_map = cols >= 0
    if on_map.any():
        seen[on_map] = np.asarray(served.X[rows[on_map], cols[on_map]]).ravel() != 0
    return pairs[~seen]


def prequential_baseline(
    served: Any, test: pd.DataFrame, size: int, k: int, *, slices: int = BASELINE_SLICES
) -> dict[str, float | None]:
    """The model's prequential figures on its own test split, in slices of ``size`` rows
    (the latest first), averaged: what an unchanged batch of that size should score."""
    ordered = _latest(test, len(test))
    scores = []
    for end in range(len(ordered), 0, -max(size, 1))[:slices]:
        chunk = ordered.iloc[max(0, end - size) : end]
        found = prequential(served, chunk, k)
        if found[f"hit_rate@{k}"] is not None:
            scores.append(found)
    if not scores:
        return {f"hit_rate@{k}": None, f"ndcg@{k}": None}
    return {m: float(np.mean([s[m] for s in scores])) for m in (f"hit_rate@{k}", f"ndcg@{k}")}


def decay(current: dict[str, Any], baseline: dict[str, Any], k: int) -> dict[str, float | None]:
    """Relative drops ``1 - current / baseline`` of hit rate and NDCG (``None`` where
    either is missing or the baseline is zero); positive means worse than the baseline."""
    out: dict[str, float | None] = {}
    for metric, name in ((f"hit_rate@{k}", "hit_rate_drop"), (f"ndcg@{k}", "ndcg_drop")):
        now, then = current.get(metric), baseline.get(metric)
        out[name] = None if now is None or not then else float(1.0 - now / then)
    return out
