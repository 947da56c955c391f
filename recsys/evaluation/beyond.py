"""Beyond accuracy: coverage, novelty, diversity, popularity bias and slices.

Everything here scores top-K lists that were already made; no model is
fitted. Two inputs describe the world the lists live in:

- a :class:`Catalogue` (built by :func:`build_catalogue` from the training
  interactions and the optional items table): the recommendable items, each
  item's popularity (distinct training users), whether it is a *head* item
  (the most popular ``head_share`` of the catalogue) and a content vector per
  item (its genres, or, without genres, its column of the training matrix);
- the holdout: every test row is a relevant item for its user.

Definitions (``k`` = list length, slots holding no item are ignored):

- ``catalogue_coverage``: distinct recommended catalogue items / catalogue size;
- ``user_coverage``: share of evaluated users with at least one recommendation;
- ``novelty``: mean self-information ``-log2((pop + 1) / (n_train_users + 1))``
  of the recommended items (higher = less obvious);
- ``diversity``: intra-list diversity, the mean over users of the mean
  ``1 - cosine`` similarity of every pair of items in the user's list;
- ``avg_popularity``: mean popularity (distinct training users) of the
  recommended items;
- ``gini``: Gini index of how often each catalogue item is recommended
  (0 = every item equally often, near 1 = a few items take every slot);
- ``long_tail_share``: share of recommended slots that hold a tail item.

Slices (:func:`slice_summary`): each user-side grouping (``activity`` = cold
/ light / heavy by training interactions; ``gender`` and ``age_band`` where
a users table has them) and the item-side grouping ``items`` (NDCG with only
head, or only tail, items counted as relevant) reports each group's mean
NDCG@K; a grouping's ``gap`` is its best minus its worst group, and
``fairness_gap`` is the largest gap over the user-side groupings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import (
    AGE_COL,
    GENDER_COL,
    GENRES_COL,
    ITEM_COL,
    RANK_COL,
    SCORE_COL,
    USER_COL,
)
from recsys.errors import InputError, check_k
from recsys.evaluation.metrics import per_user_metrics

log = logging.getLogger(__name__)

#: Share of the catalogue (most popular first) that counts as the head.
HEAD_SHARE = 0.2
#: Users with at most this many training interactions are ``cold``.
COLD_MAX = 5
#: Users at or above this quantile of training activity are ``heavy``.
HEAVY_QUANTILE = 0.8
#: Lower bounds of the age bands (the last band is open-ended).
AGE_BANDS = (0, 18, 25, 35, 45, 56)
#: User-side groupings, in report order.
USER_SLICINGS = ("activity", GENDER_COL, "age_band")
#: The item-side grouping (head vs tail items).
ITEM_SLICING = "items"
#: Keys of :func:`beyond_accuracy`, in report order.
BEYOND_METRICS = (
    "catalogue_coverage",
    "user_coverage",
    "novelty",
    "diversity",
    "avg_popularity",
    "gini",
    "long_tail_share",
)


class BeyondInputError(InputError):
    """Lists, holdout or side tables that cannot be scored together."""


@dataclass(frozen=True)
class Catalogue:
    """The recommendable items and what beyond-accuracy metrics know about them.

    Attributes:
        items: catalogue item ids; row ``i`` of every array below is ``items[i]``.
        popularity: distinct training users per item (0 for an unseen item).
        head: True for the most popular ``head_share`` of the catalogue.
        features: L2-normalised item vectors (genres or training columns); a
            row of zeros for an item with no content.
        n_train_users: distinct users in the training data.
    """

    items: pd.Index
    popularity: np.ndarray
    head: np.ndarray
    features: sp.csr_matrix
    n_train_users: int

    @property
    def size(self) -> int:
        """Number of catalogue items."""
        return len(self.items)


@dataclass(frozen=True)
class DetailedEvaluation:
    """Everything one set of lists scored on one holdout.

    Attributes:
        metrics: accuracy means (``ndcg@k``...), :data:`BEYOND_METRICS` and the
            flattened slice figures (``slice.<grouping>.<group>.ndcg@k``,
            ``gap.<grouping>.ndcg@k``, ``fairness_gap.ndcg@k``).
        per_user: one row per test user (index ``user_id``): the per-user
            metrics, ``ndcg@k[head]`` / ``ndcg@k[tail]`` (NaN when the user has
            no relevant item of that kind) and the group columns.
        slices: :func:`slice_summary` of ``per_user``.
    """

    metrics: dict[str, float]
    per_user: pd.DataFrame
    slices: pd.DataFrame


# ------------------------------------------------------------------ catalogue
def build_catalogue(
    train: pd.DataFrame, items: pd.DataFrame | None = None, *, head_share: float = HEAD_SHARE
) -> Catalogue:
    """The catalogue of ``train`` (plus every item of the items table).

    Args:
        train: training interactions (``user_id``, ``item_id``).
        items: optional items table; its ``genres`` (pipe-separated) become
            the content vectors when any item has one.
        head_share: share of the catalogue, most popular first, in the head.

    Raises:
        BeyondInputError: a column is missing, ``train`` is empty or
            ``head_share`` is not in (0, 1).
    """
    _require(train, (USER_COL, ITEM_COL), "train")
    if train.empty:
        raise BeyondInputError("train has no interactions; a catalogue needs some")
    if not 0 < head_share < 1:
        raise BeyondInputError(f"head_share must lie strictly between 0 and 1, got {head_share}")
    ids = train[ITEM_COL].unique()
    if items is not None:
        _require(items, (ITEM_COL,), "items")
        ids = np.union1d(ids, items[ITEM_COL].to_numpy())
    index = pd.Index(np.sort(ids), name=ITEM_COL)
    pairs = train[[USER_COL, ITEM_COL]].drop_duplicates()
    popularity = np.bincount(index.get_indexer(pairs[ITEM_COL]), minlength=len(index))
    return Catalogue(
        items=index,
        popularity=popularity.astype(np.float64),
        head=_head_mask(popularity, head_share),
        features=_item_features(index, pairs, items),
        n_train_users=int(pairs[USER_COL].nunique()),
    )


def _head_mask(popularity: np.ndarray, head_share: float) -> np.ndarray:
    """The ``ceil(head_share * n)`` most popular items (ties by catalogue order)."""
    n_head = int(np.ceil(head_share * popularity.size))
    order = np.argsort(-popularity, kind="stable")
    mask = np.zeros(popularity.size, dtype=bool)
    mask[order[:n_head]] = True
    return mask


def _item_features(
    index: pd.Index, pairs: pd.DataFrame, items: pd.DataFrame | None
) -> sp.csr_matrix:
    """L2-normalised genre vectors, or training columns when no item has a genre."""
    if items is not None and GENRES_COL in items.columns:
        genres = items.set_index(ITEM_COL)[GENRES_COL].fillna("").astype(str).str.split("|")
        exploded = genres.explode()
        exploded = exploded[exploded.str.len() > 0]
        if len(exploded):
            names = pd.Index(np.sort(exploded.unique()))
            F = sp.csr_matrix(
                (
                    np.ones(len(exploded)),
                    (index.get_indexer(exploded.index), names.get_indexer(exploded)),
                ),
                shape=(len(index), len(names)),
            )
            return _normalise_rows(F)
    users = pd.Index(np.sort(pairs[USER_COL].unique()))
    F = sp.csr_matrix(
        (
            np.ones(len(pairs)),
            (index.get_indexer(pairs[ITEM_COL]), users.get_indexer(pairs[USER_COL])),
        ),
        shape=(len(index), len(users)),
    )
    return _normalise_rows(F)


def _normalise_rows(F: sp.csr_matrix) -> sp.csr_matrix:
    F = sp.csr_matrix(F)
    F.sum_duplicates()
    F.data[:] = 1.0
    norms = np.sqrt(np.asarray(F.multiply(F).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ F)


# ----------------------------------------------------------- list-level metrics
def beyond_accuracy(rec_items: np.ndarray, catalogue: Catalogue, k: int) -> dict[str, float]:
    """Coverage, novelty, diversity and popularity-bias figures of top-``k`` lists.

    Args:
        rec_items: ``(n_users, width)`` catalogue indices, best first, ``-1``
            for an empty slot; only the first ``k`` columns count.
        catalogue: what the indices point into.
        k: the cut-off.

    Returns:
        The keys of :data:`BEYOND_METRICS` (definitions in the module
        docstring). With no recommended item at all, coverage figures are 0
        and the per-item averages are NaN.

    Raises:
        BeyondInputError: bad shape, ``k < 1`` or an index outside the catalogue.
    """
    rec = _check_rec(rec_items, catalogue, k)
    filled = rec >= 0
    picked = rec[filled]
    exposure = np.bincount(picked, minlength=catalogue.size)
    pop = catalogue.popularity[picked]
    info = -np.log2((pop + 1.0) / (catalogue.n_train_users + 1.0))
    return {
        "catalogue_coverage": float((exposure > 0).sum() / catalogue.size),
        "user_coverage": float(filled.any(axis=1).mean()) if rec.shape[0] else 0.0,
        "novelty": _mean(info),
        "diversity": intra_list_diversity(rec, catalogue.features),
        "avg_popularity": _mean(pop),
        "gini": gini(exposure),
        "long_tail_share": _mean(~catalogue.head[picked]),
    }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if np.size(values) else float("nan")


def _check_rec(rec_items: np.ndarray, catalogue: Catalogue, k: int) -> np.ndarray:
    k = check_k(k)
    rec = np.asarray(rec_items)
    if rec.ndim != 2 or not np.issubdtype(rec.dtype, np.integer):
        raise BeyondInputError(
            f"rec_items must be a 2-D integer array, got {rec.dtype} with shape {rec.shape}"
        )
    rec = rec[:, :k].astype(np.int64)
    if rec.size and (rec.min() < -1 or rec.max() >= catalogue.size):
        raise BeyondInputError(
            f"rec_items must hold -1 or catalogue indices in [0, {catalogue.size})"
        )
    return rec


def intra_list_diversity(rec: np.ndarray, features: sp.csr_matrix) -> float:
    """Mean over users of the mean pairwise ``1 - cosine`` of their list's items.

    ``features`` rows must be L2-normalised; an item with an all-zero row is
    unlike every other item (distance 1). Users with fewer than two items are
    left out; NaN when no user has two.
    """
    first, second = np.triu_indices(rec.shape[1], k=1)
    a, b = rec[:, first], rec[:, second]
    valid = (a >= 0) & (b >= 0)
    if not valid.any():
        return float("nan")
    owner = np.broadcast_to(np.arange(rec.shape[0])[:, None], a.shape)[valid]
    sims = np.asarray(features[a[valid]].multiply(features[b[valid]]).sum(axis=1)).ravel()
    n_pairs = np.bincount(owner, minlength=rec.shape[0])
    total = np.bincount(owner, weights=1.0 - sims, minlength=rec.shape[0])
    has = n_pairs > 0
    return float(np.mean(total[has] / n_pairs[has]))


def gini(exposure: np.ndarray) -> float:
    """Gini index of non-negative counts: 0 when all equal, ``(n-1)/n`` when one holds all.

    NaN for an empty array or when every count is zero.
    """
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * total))


# ----------------------------------------------------------------- per-user side
def user_groups(
    user_ids: np.ndarray,
    train: pd.DataFrame,
    users: pd.DataFrame | None = None,
    *,
    cold_max: int = COLD_MAX,
    heavy_quantile: float = HEAVY_QUANTILE,
) -> pd.DataFrame:
    """The groups each user belongs to.

    Args:
        user_ids: the users to label (external ids).
        train: training interactions; activity = a user's training rows.
        users: optional users table with ``gender`` and/or ``age``.
        cold_max: at most this many training interactions = ``cold``.
        heavy_quantile: at or above this quantile of the training users'
            activity = ``heavy``; the rest are ``light``.

    Returns:
        Index ``user_id`` (in ``user_ids`` order), column ``activity`` and,
        where the users table has them, ``gender`` and ``age_band``
        (``"18-24"``...; ``"unknown"`` for a missing value).
    """
    index = pd.Index(user_ids, name=USER_COL)
    counts = train[USER_COL].value_counts()
    activity = counts.reindex(index, fill_value=0).to_numpy()
    heavy_min = max(float(np.quantile(counts.to_numpy(), heavy_quantile)), cold_max + 1)
    labels = np.where(
        activity <= cold_max, "cold", np.where(activity >= heavy_min, "heavy", "light")
    )
    out = pd.DataFrame({"activity": labels}, index=index)
    if users is not None and USER_COL in users.columns:
        table = users.drop_duplicates(USER_COL).set_index(USER_COL).reindex(index)
        if GENDER_COL in table.columns:
            out[GENDER_COL] = table[GENDER_COL].astype("string").fillna("unknown").to_numpy()
        if AGE_COL in table.columns:
            out["age_band"] = _age_bands(pd.to_numeric(table[AGE_COL], errors="coerce"))
    return out


def _age_bands(age: pd.Series) -> np.ndarray:
    edges = [*AGE_BANDS, np.inf]
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(AGE_BANDS[:-1], AGE_BANDS[1:], strict=True)]
    names[0] = f"under{AGE_BANDS[1]}"
    names.append(f"{AGE_BANDS[-1]}+")
    bands = pd.cut(age, edges, right=False, labels=names).astype("string")
    return bands.fillna("unknown").to_numpy()


def slice_summary(per_user: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean ``metric`` per group of every grouping present in ``per_user``.

    Args:
        per_user: as :attr:`DetailedEvaluation.per_user`.
        metric: e.g. ``ndcg@10``; the item slicing reads ``metric[head]`` and
            ``metric[tail]``.

    Returns:
        Columns ``slicing, group, n_users, mean``, one row per non-empty group,
        user-side groupings first.

    Raises:
        BeyondInputError: ``metric`` is not a column of ``per_user``.
    """
    if metric not in per_user.columns:
        raise BeyondInputError(f"per_user has no column {metric!r}")
    rows = []
    for slicing in (s for s in USER_SLICINGS if s in per_user.columns):
        grouped = per_user.groupby(slicing, sort=True)[metric].agg(["size", "mean"])
        rows += [(slicing, str(g), int(r["size"]), float(r["mean"])) for g, r in grouped.iterrows()]
    for group in ("head", "tail"):
        column = f"{metric}[{group}]"
        if column in per_user.columns and per_user[column].notna().any():
            values = per_user[column].dropna()
            rows.append((ITEM_SLICING, group, int(values.size), float(values.mean())))
    return pd.DataFrame(rows, columns=["slicing", "group", "n_users", "mean"])


def slice_metrics(summary: pd.DataFrame, metric: str) -> dict[str, float]:
    """Flat figures of a :func:`slice_summary`: each group, each gap, the fairness gap."""
    out = {f"slice.{r.slicing}.{r.group}.{metric}": r.mean for r in summary.itertuples()}
    gaps = summary.groupby("slicing")["mean"].agg(lambda m: m.max() - m.min())
    out.update({f"gap.{slicing}.{metric}": float(gap) for slicing, gap in gaps.items()})
    user_gaps = [gaps[s] for s in USER_SLICINGS if s in gaps.index]
    out[f"fairness_gap.{metric}"] = float(max(user_gaps)) if user_gaps else 0.0
    return out


# ------------------------------------------------------------------ one entry
def evaluate_detailed(
    recs: pd.DataFrame,
    test: pd.DataFrame,
    train: pd.DataFrame,
    *,
    k: int = 10,
    catalogue: Catalogue | None = None,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> DetailedEvaluation:
    """Accuracy, beyond-accuracy and slice figures of a long recommendation frame.

    Every distinct test user is evaluated (one with no list scores zero), so
    two models scored on the same holdout have the same users, row for row,
    in ``per_user``: what a paired comparison needs.

    Args:
        recs: ``user_id, item_id`` and ``rank`` (1 = best) or ``score``.
        test: holdout interactions; every row is relevant to its user.
        train: the training interactions the lists were made from.
        k: the cut-off.
        catalogue: prebuilt :func:`build_catalogue` (built from ``train`` and
            ``items`` when ``None``).
        items: optional items table (genres for diversity).
        users: optional users table (gender, age slices).

    Raises:
        BeyondInputError: a column is missing, ``test`` is empty, or a list
            holds an item outside the catalogue.
        recsys.metrics.MetricInputError: a list repeats an item.
    """
    _require(recs, (USER_COL, ITEM_COL), "recs")
    _require(test, (USER_COL, ITEM_COL), "test")
    if test.empty:
        raise BeyondInputError("test has no interactions; nothing to evaluate")
    catalogue = catalogue or build_catalogue(train, items)
    user_index = pd.Index(np.sort(test[USER_COL].unique()), name=USER_COL)
    rec = _rec_matrix(recs, user_index, catalogue, k)
    truth, head_cols = _truth(test, user_index, catalogue)
    per_user = _per_user(rec, truth, head_cols, user_index, k)
    per_user = per_user.join(user_groups(user_index.to_numpy(), train, users))
    metric = f"ndcg@{k}"
    summary = slice_summary(per_user, metric)
    accuracy = per_user[[c for c in per_user.columns if c.endswith(f"@{k}")]].mean()
    metrics = {name: float(v) for name, v in accuracy.items()}
    metrics.update(beyond_accuracy(rec, catalogue, k))
    metrics.update(slice_metrics(summary, metric))
    return DetailedEvaluation(metrics=metrics, per_user=per_user, slices=summary)


def _rec_matrix(recs: pd.DataFrame, users: pd.Index, catalogue: Catalogue, k: int) -> np.ndarray:
    """``(len(users), k)`` catalogue indices of each user's best ``k``, -1 where empty."""
    if RANK_COL in recs.columns:
        ordered = recs.sort_values([USER_COL, RANK_COL], kind="stable")
    elif SCORE_COL in recs.columns:
        ordered = recs.sort_values([USER_COL, SCORE_COL], ascending=[True, False], kind="stable")
    else:
        raise BeyondInputError(f"recs needs a {RANK_COL!r} or a {SCORE_COL!r} column")
    slot = ordered.groupby(USER_COL, sort=False).cumcount().to_numpy()
    rows = users.get_indexer(ordered[USER_COL])
    cols = catalogue.items.get_indexer(ordered[ITEM_COL])
    keep = (slot < k) & (rows >= 0)
    if (cols[keep] < 0).any():
        bad = ordered[ITEM_COL].to_numpy()[keep & (cols < 0)][:3].tolist()
        raise BeyondInputError(f"recs name items outside the catalogue, e.g. {bad}")
    rec = np.full((users.size, k), -1, dtype=np.int64)
    rec[rows[keep], slot[keep]] = cols[keep]
    return rec


def _truth(
    test: pd.DataFrame, users: pd.Index, catalogue: Catalogue
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Relevance matrix (unknown items get extra columns) and its head-column mask."""
    pairs = test[[USER_COL, ITEM_COL]].drop_duplicates()
    cols = catalogue.items.get_indexer(pairs[ITEM_COL])
    unknown = pd.Index(pairs.loc[cols < 0, ITEM_COL].unique())
    cols = np.where(cols >= 0, cols, catalogue.size + unknown.get_indexer(pairs[ITEM_COL]))
    width = catalogue.size + unknown.size
    truth = sp.csr_matrix(
        (np.ones(cols.size, dtype=bool), (users.get_indexer(pairs[USER_COL]), cols)),
        shape=(users.size, width),
    )
    head = np.zeros(width, dtype=bool)
    head[: catalogue.size] = catalogue.head
    return truth, head


def _per_user(
    rec: np.ndarray, truth: sp.csr_matrix, head: np.ndarray, users: pd.Index, k: int
) -> pd.DataFrame:
    """Per-user metrics plus NDCG counting only head, or only tail, items as relevant."""
    frame = per_user_metrics(rec, truth, k)
    frame.index = users[frame.index.to_numpy()]
    for name, mask in (("head", head), ("tail", ~head)):
        masked = sp.csr_matrix(truth @ sp.diags(mask.astype(np.float64)))
        masked.eliminate_zeros()
        part = per_user_metrics(rec, masked, k)[f"ndcg@{k}"]
        frame[f"ndcg@{k}[{name}]"] = part.set_axis(users[part.index.to_numpy()])
    return frame


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BeyondInputError(f"{what} frame lacks column(s) {missing}")
