"""Two-stage recommender: several models propose candidates, XGBoost ranks them.

Stage 1 (candidates): every enabled generator (any registered model) scores
the catalogue for a user; the union of each generator's top-``n_candidates``
unseen items is the user's candidate set.

Stage 2 (ranking): an XGBoost learning-to-rank model (query group = user)
orders the candidates from features of each (user, candidate) pair — see
:data:`FEATURE_GROUPS` and :func:`feature_names`.

Training never sees the evaluation data. Inside :meth:`fit` the training matrix
is split once more by time within each user: the latest ``label_share`` of
each user's interactions become the ranker's labels, the generators are fitted
on the earlier part, and XGBoost learns which candidates turned out to be in
the later part (with ``holdout="random"``, the default, each of ``n_folds``
random folds of every history serves as labels in turn). XGBoost's
hyper-parameters are picked on a validation share of those users (also carved
from the training data), and ``n_bags`` boosters, each early-stopped on a
different share, are averaged. Finally the generators are refitted on all of
``X`` for scoring.

A run that trains a sequential model (``attention``) fuses it: :func:`fused_params`
adds it to the generators, so its ranks and scores are candidates and features
next to the user's sequence features (:data:`SEQUENCE_FEATURES`), and under a
time-ordered protocol the ranker learns from each user's latest items.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import replace
from inspect import signature
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import GENRES_COL, YEAR_COL
from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender, _dense_top_k, pair_times, top_k
from recsys.progress import Ticker
from recsys.progress import log as progress

log = logging.getLogger(__name__)

DEFAULT_GENERATORS = ("popularity", "itemknn", "als", "ease", "content")
#: The generator :func:`fused_params` adds under ``temporal``: popularity with a
#: week's half-life, what is popular now rather than overall.
RECENT_GENERATOR = "recent:popularity"
RECENT_PARAMS = {"recent": {"half_life_days": 7.0}}

#: Settings of a sequential generator fitted on the ranker's carve (under ``loo``;
#: the served one keeps its own), those it takes: 10 epochs rather than 20, and
#: only each user's latest window of pairs (``recent_windows``). On a ``loo``
#: carve of ML-100K's training part (its ``loo`` train split, split again),
#: ranker seeds 42/1/2, NDCG@10: 10 epochs 0.1275/0.1236/0.1273 in 16.2-18.6 s
#: against 0.1257/0.1274/0.1254 in 23.6-25.6 s with attention's own 20
#: (attention alone 0.1132); 5 epochs 0.1208/0.1142/0.1194 in 10.2-11.3 s.
#: With the follow features, the latest window alone 0.1381/0.1386/0.1360 in
#: 16.5-17.4 s against 0.1341/0.1384/0.1370 in 26.7-31.3 s with every window (a
#: slower hour; attention alone 0.1170/0.1201/0.1189); the latest 50 pairs
#: alone 0.1312/0.1396/0.1323 in 14.1-17.5 s.
CARVE_PARAMS = {"epochs": 10, "recent_windows": 1}

#: Per-generator features (prefixed with the generator's name).
GENERATOR_FEATURES = ("rank", "score_ratio", "score_z")
#: Features of the user alone.
USER_FEATURES = ("user_activity_pct", "user_rating_mean", "user_rating_std")
#: Features of the item alone.
ITEM_FEATURES = (
    "item_popularity_share",
    "item_rating_mean",
    "item_late_share",
    "item_position_mean",
    "item_year",
)
#: Features of the pair beyond the generators.
PAIR_FEATURES = ("genre_affinity", "genre_affinity_max", "n_generators")
#: Features of the item around the user's own active period (needs
#: ``context.timestamps``; NaN without it): the item's share of all
#: interactions within ``_WINDOWS`` days of the user's first-to-last activity,
#: and how many days the item's first interaction came after the user's last
#: and its last before the user's first.
TIME_FEATURES = (
    "item_window_share_7d",
    "item_window_share_60d",
    "item_first_after_user_days",
    "item_last_before_user_days",
)
#: How the candidate fits the user's own history (from ``X``'s rows): its
#: release year against the years the user watches (z-score, distance, and the
#: user's mean year), the user's share of items from its decade, its genres'
#: log-lift in the user's history over the whole catalogue, and its
#: log-popularity against the popularity the user usually picks.
TASTE_FEATURES = (
    "year_z",
    "year_gap",
    "user_year_mean",
    "decade_share",
    "genre_lift",
    "popularity_z",
    "popularity_gap",
    "user_popularity_mean",
)
#: What the user's own sequence says: how many interactions it holds, how
#: many days it spans and how many days before the data's last interaction it
#: ended (both days NaN without ``context.timestamps``). They let the booster
#: learn when the sequence matters, e.g. to trust a sequential generator's
#: ranks more for users with a short or a recent history.
SEQUENCE_FEATURES = ("user_history_length", "user_active_days", "user_idle_days")
#: What tends to come next after the user's latest items, from everyone's
#: sequences: the share of the items that followed the user's last item
#: (within :data:`_FOLLOW_WINDOW` places, nearer ones weighing more) that were
#: the candidate, and the same over the user's last :data:`_FOLLOW_RECENT`
#: items (the later, the heavier). A first-order Markov chain beside the
#: sequential generator, which it helps where a sequence is short or its
#: last step common.
FOLLOW_FEATURES = ("follows_last", "follows_recent")
FEATURE_GROUPS = {
    "user": USER_FEATURES,
    "item": ITEM_FEATURES,
    "pair": PAIR_FEATURES,
    "time": TIME_FEATURES,
    "sequence": SEQUENCE_FEATURES,
    "follow": FOLLOW_FEATURES,
    "taste": TASTE_FEATURES,
}
#: Protocols whose test items come after the training ones in time; a ranker
#: fused for them learns from each user's latest items (``holdout="time"``).
TIME_PROTOCOLS = ("loo", "temporal")
#: User-table columns whose segments give ``segment_lift_<column>``: the
#: candidate's share of the interactions of users in the same segment over its
#: share of all interactions. Numeric columns are cut into quantile bins.
DEFAULT_SEGMENTS = ("gender", "age", "occupation")
_SEGMENT_BINS = 5

#: XGBoost settings tried on the validation users when ``param_grid`` is None.
#: One setting: each costs a full boosting run, and on a validation carve of
#: the ML-100K ``msr`` training split (``recsys.data.splits.validation_split``) the
#: candidates differed by noise (weight 1 vs 10, depth 4 vs 6). Eta 0.1 rather
#: than 0.05: half the rounds, and with 30 candidates per generator the same
#: test NDCG@10 on ML-100K (``msr``, seeds 42/1/2: mean 0.5004 vs 0.5003 with
#: 0.05 and 50 candidates; ``loo`` 0.0766 vs 0.0767) in 16 s instead of 34-43.
#: 64 histogram bins rather than XGBoost's 256, with four bags rather than five:
#: on that carve (seeds 42/1/2) NDCG@10 0.2838/0.2792/0.2811 against
#: 0.2799/0.2778/0.2808, in 12.5-15.3 s of fit against 15.2-18.9 s (64 bins and
#: five bags 0.2824/0.2791/0.2803, three bags 0.2847/0.2779/0.2790).
DEFAULT_GRID: dict[str, tuple] = {
    "max_depth": (6,),
    "learning_rate": (0.1,),
    "min_child_weight": (10.0,),
    "max_bin": (64,),
}
#: Boosting rounds without a better validation NDCG@10 before the first bag stops.
#: 15 rather than 30: on the ML-100K ``msr`` validation carve (seeds 42/1/2) the
#: same best rounds and NDCG@10 (0.2838/0.2792/0.2811) for 15 fewer rounds; on
#: the ``temporal`` carve 0.1832/0.2204/0.2259 against 0.1832/0.2204/0.2263
#: (10 stopped seeds 1 and 2 after 10 and 13 rounds instead of 47 and 70).
_PATIENCE = 15
#: Share of each user's history counted as "late" for ``item_late_share``.
_LATE = 0.2
#: Margins (days) around a user's active period for ``item_window_share_*``.
_WINDOWS = (7, 60)
_DAY = 86_400.0
#: Places after an item within which a later item counts as following it.
_FOLLOW_WINDOW = 3
#: The user's latest items ``follows_recent`` looks from.
_FOLLOW_RECENT = 5
#: Followers kept per item, the most frequent (every item may follow a popular
#: one; the rare ones carry little and would make each lookup a long row).
_FOLLOWERS = 100
#: Dense score cells (users × items) each generator holds at once while the
#: ranker builds its training rows.
_BLOCK_CELLS = 1 << 24


def parse_generator(entry: str) -> tuple[str, str]:
    """``(label, model)`` of a generator entry: ``"ease"`` or ``"ease_wide:ease"``.

    The label names the generator's features and its ``generator_params`` key,
    so one model can serve twice with different settings.

    Raises:
        ValueError: an empty label or model name.
    """
    label, _, model = str(entry).partition(":")
    model = model or label
    if not label or not model:
        raise InputError(f"generator entry must be 'model' or 'label:model', got {entry!r}")
    return label, model


def fused_params(
    models: Iterable[str], *, protocol: str | None = None, params: dict | None = None
) -> dict:
    """The ranker's hyper-parameters in a run that trains ``models`` (``params`` on top).

    When the run's ``protocol`` holds out later items (:data:`TIME_PROTOCOLS`),
    every sequential model the run trains (``attention``) joins the default
    generators, so its scores and ranks become the ranker's candidates and
    features, unless ``params`` names the generators itself; under ``loo`` the
    ranker then learns from each user's latest items (``holdout="time"``, one
    fold), the carve that matches such a test, and fits the sequential models
    on that carve with :data:`CARVE_PARAMS`, unless ``params`` says
    otherwise. Under a random holdout the order of a history says nothing
    about the held-out items, and each fold would refit the network (minutes
    each), so nothing is fused there.

    Under ``temporal`` (the last stretch of everyone's activity held out) the
    ranker instead gets :data:`RECENT_GENERATOR` beside the defaults, fuses no
    sequential model, and learns from the last stretch of its own training
    data (``holdout="cutoff"``, one fold). Chosen on a temporal carve of
    ML-100K's training part (its ``temporal`` train split, split again),
    NDCG@10 for seeds 42, 1, 2: 0.2103, 0.2230, 0.2222 against 0.1708, 0.1757,
    0.1809 with the default carve and generators (EASE 0.1738); the cutoff
    carve alone scored 0.1643, 0.1652, 0.1543 and the recent generator alone
    0.1715, 0.1729, 0.1761; half-lives of 1, 3 and 14 days 0.1805, 0.1838,
    0.1881; fusing attention as well 0.1951 (seed 42, and 71 s instead of 2 s;
    with the time carve instead of the cutoff, 0.1577).

    Under both time-ordered protocols the ranker also reads what follows the
    user's latest items in everyone's sequences (``follows=True``, unless
    ``params`` says otherwise). On the carves above, seeds 42, 1, 2: ``loo``
    0.1341, 0.1384, 0.1370 against 0.1307, 0.1340, 0.1276 without (attention
    alone 0.1170, 0.1201, 0.1189); ``temporal`` 0.1954, 0.1841, 0.1877 against
    0.1832, 0.2013, 0.1791. Under ``msr`` it scored 0.2776, 0.2777, 0.2778
    against 0.2838, 0.2774, 0.2839, so a random holdout goes without.

    Returns:
        The parameters to build the ranker with (``params`` unchanged under a
        random holdout; under a time-ordered one, only ``follows`` added when
        they name the generators, or under ``loo`` when no sequential model is
        trained).
    """
    from recsys.models import model_class

    params = dict(params or {})
    if protocol in TIME_PROTOCOLS:
        params.setdefault("follows", True)
    if "generators" in params or protocol not in TIME_PROTOCOLS:
        return params
    if protocol == "temporal":
        params["generators"] = (*DEFAULT_GENERATORS, RECENT_GENERATOR)
        params["generator_params"] = {**RECENT_PARAMS, **(params.get("generator_params") or {})}
        if not {"holdout", "n_folds"} & set(params):
            params.update(holdout="cutoff", n_folds=1)
        return params
    labels = {parse_generator(g)[0] for g in DEFAULT_GENERATORS}
    extra = tuple(
        m for m in models if m != "ranker" and m not in labels and model_class(m).sequential
    )
    if not extra:
        return params
    params["generators"] = (*DEFAULT_GENERATORS, *extra)
    if not {"holdout", "n_folds"} & set(params):
        params.update(holdout="time", n_folds=1)
    if "carve_params" not in params:
        params["carve_params"] = {}
        for m in extra:
            takes = signature(model_class(m)).parameters
            if carve := {k: v for k, v in CARVE_PARAMS.items() if k in takes}:
                params["carve_params"][m] = carve
    return params


def feature_names(
    generators: tuple[str, ...],
    segments: tuple[str, ...] = DEFAULT_SEGMENTS,
    *,
    follows: bool = False,
) -> list[str]:
    """Column names of the ranker's feature matrix, in order (:data:`FOLLOW_FEATURES`
    only with ``follows``)."""
    labels = [parse_generator(g)[0] for g in generators]
    gen = [f"{g}_{f}" for g in labels for f in GENERATOR_FEATURES]
    groups = [g for name, g in FEATURE_GROUPS.items() if follows or name != "follow"]
    return (
        gen + [f for group in groups for f in group] + [f"segment_lift_{col}" for col in segments]
    )


class XGBRankerRecommender(Recommender):
    """XGBoost learning-to-rank over the union of several generators' top-N.

    Args:
        generators: the candidate generators, each a registry name or
            ``"label:name"`` (one model twice with different settings, e.g.
            ``("ease", "ease_sharp:ease")``); see :func:`parse_generator`.
        generator_params: per-generator hyper-parameters ``{label: {...}}``.
        n_candidates: top-N taken from each generator (30: on ML-100K the same
            NDCG@10 as 50, with a third fewer rows to learn from and to score).
        label_share: share of each user's interactions that become labels while
            training the ranker (users keep at least one for the generators).
        holdout: which interactions become labels: ``"time"`` the latest ones
            (matches time-based evaluation such as ``loo``/``temporal``),
            ``"random"`` a seeded random share (matches random per-user or
            per-item splits such as ``msr``). On ML-100K ``msr`` the time
            carve taught the ranker "recent items win", which does not hold
            there (NDCG@10 0.21 vs 0.47 with the random carve), hence the default.
            ``"cutoff"`` takes the latest ``label_share`` of all interactions
            by time, one moment for everyone, as the ``temporal`` protocol does
            (:func:`split_at_cutoff`; needs ``context.timestamps``); runs under
            ``temporal`` use it, with a recent-popularity generator
            (:func:`fused_params`).
        val_share: share of the labelled users held out to choose XGBoost's
            settings and its number of trees.
        objective: ``"rank:pairwise"`` (the default: on the ML-100K ``msr``
            validation carve 0.2807 vs 0.2781 for ``"rank:ndcg"``, five bags at
            eta 0.1) or ``"rank:ndcg"``.
        param_grid: XGBoost settings to try (every combination);
            ``None`` uses :data:`DEFAULT_GRID`.
        n_folds: with ``holdout="random"``, deal each user's items into this
            many folds and learn from every fold in turn (generators refitted
            without it), so every training interaction serves once as a label.
            Above ``large_data`` training interactions only the first fold is
            learnt from (each fold costs a refit of every generator).
        n_bags: boosters averaged for scoring. Each learns from a different
            random ``1 - val_share`` of the labelled users; the first stops
            early on the rest (its carve also picks the XGBoost setting) and
            the others boost as many rounds, validated once at the end.
        max_rounds: most boosting rounds (early stopping picks fewer).
        segments: user-table columns (``context.user_features``) whose
            segments give ``segment_lift_*`` features (NaN when absent).
        n_jobs: XGBoost threads.
        random_state: seed of the carves and XGBoost; each generator takes its
            own from ``generator_params`` (``recsys benchmark --seed`` sets both).
        max_users: most labelled users whose candidates the booster learns from;
            a seeded sample of them beyond it (logged), so the ranker's cost
            stops growing with the users; ``None`` = all.
        large_data: training interactions above which only one fold is learnt
            from (see ``n_folds``).
        carve_params: per-generator parameters of the carves' fits only, over
            ``generator_params`` (``{label: {...}}``): a cheaper fit where the
            booster learns, while the served generators keep their own.
        follows: add :data:`FOLLOW_FEATURES` (what follows the user's latest
            items in everyone's sequences). Runs under a time-ordered protocol
            turn it on (:func:`fused_params`); under a random holdout the
            order of a history says nothing about the held-out items.

    Attributes:
        generators_: the generators refitted on all of ``X``.
        reused_: labels of the generators taken as the run had fitted them
            (``context.fitted``) rather than fitted again.
        boosters_: the ``n_bags`` trained ``xgboost.Booster`` (each cut at its best round).
        best_params_: the chosen XGBoost setting.
        n_rounds_: each bag's boosting rounds.
        validation_: validation NDCG@10 (over candidates) of each tried setting
            (first bag) and of each further bag (``"bag"`` key).
        feature_names_: columns of the feature matrix.
        feature_importances_: feature name → total gain (0 for unused features).
        item_stats_: per-item feature arrays learned from ``X``.
        item_genres_: CSR items × genres, or ``None`` without an items table.
    """

    name = "ranker"

    @property
    def threaded_scoring(self) -> bool:  # type: ignore[override]
        """Batches in threads only when every generator allows it (not with attention)."""
        return all(g.threaded_scoring for g in getattr(self, "generators_", {}).values())

    def __init__(
        self,
        generators: tuple[str, ...] = DEFAULT_GENERATORS,
        generator_params: dict[str, dict] | None = None,
        n_candidates: int = 30,
        label_share: float = 0.2,
        holdout: str = "random",
        val_share: float = 0.25,
        objective: str = "rank:pairwise",
        param_grid: dict[str, tuple] | None = None,
        n_folds: int = 4,
        n_bags: int = 4,
        max_rounds: int = 400,
        segments: tuple[str, ...] = DEFAULT_SEGMENTS,
        n_jobs: int = 2,
        random_state: int | None = 42,
        max_users: int | None = 5_000,
        large_data: int = 1_000_000,
        carve_params: dict[str, dict] | None = None,
        follows: bool = False,
    ) -> None:
        self.generators = generators
        self.generator_params = generator_params
        self.n_candidates = n_candidates
        self.label_share = label_share
        self.holdout = holdout
        self.val_share = val_share
        self.objective = objective
        self.param_grid = param_grid
        self.n_folds = n_folds
        self.n_bags = n_bags
        self.max_rounds = max_rounds
        self.segments = segments
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.max_users = max_users
        self.large_data = large_data
        self.carve_params = carve_params
        self.follows = follows

    def figures(self) -> dict[str, Any]:
        """The features' importances (total gain, averaged over the bags)."""
        return {"feature_importances.png": plot_feature_importances(self)}

    # ---------------------------------------------------------------- fitting
    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        self._check_params()
        self.feature_names_ = feature_names(
            tuple(self.generators), tuple(self.segments), follows=self.follows
        )
        self.item_genres_ = _item_genres(context, X.shape[1])
        self.segment_codes_ = _segment_codes(context, X.shape[0], tuple(self.segments))
        sequences = _sequences(X, context)
        used = int(self.n_folds)
        if X.nnz > int(self.large_data) and used > 1:
            used = 1
            progress.info(
                "ranker: %s training interactions is more than large_data (%s): "
                "learning from 1 of its %d folds",
                f"{X.nnz:,}",
                f"{int(self.large_data):,}",
                int(self.n_folds),
            )
        folds_done = Ticker("ranker: candidate folds built", used, every_s=0)
        parts = []
        for f in range(used):
            parts.append(self._fold_rows(X, context, sequences, f))
            folds_done.tick(note=f"{parts[-1][0].shape[0]:,} candidate rows")
        feats, y, users = (np.concatenate(p) for p in zip(*parts, strict=True))
        folds = np.repeat(np.arange(len(parts)), [p[2].size for p in parts])
        self._fit_booster(feats, y, users, folds * X.shape[0] + users)
        self._fit_stage(X, context, sequences)
        top = sorted(self.feature_importances_, key=self.feature_importances_.get)[-3:][::-1]
        log.info(
            "ranker fitted: %d bags, best %s, top features %s",
            len(self.boosters_),
            self.best_params_,
            top,
        )

    def _check_params(self) -> None:
        if not self.generators:
            raise InputError("ranker needs at least one generator")
        specs = [parse_generator(g) for g in self.generators]
        if any(model == "ranker" for _, model in specs):
            raise InputError("ranker cannot use itself as a generator")
        labels = [label for label, _ in specs]
        if len(set(labels)) != len(labels):
            raise InputError(f"generator labels must be unique, got {labels}")
        if int(self.n_bags) < 1:
            raise InputError(f"n_bags must be >= 1, got {self.n_bags}")
        if int(self.n_candidates) < 1:
            raise InputError(f"n_candidates must be >= 1, got {self.n_candidates}")
        if not 0 < self.label_share < 1:
            raise InputError(f"label_share must lie in (0, 1), got {self.label_share}")
        if not 0 < self.val_share < 1:
            raise InputError(f"val_share must lie in (0, 1), got {self.val_share}")
        if self.holdout not in ("random", "time", "cutoff"):
            raise InputError(f"holdout must be 'random', 'time' or 'cutoff', got {self.holdout!r}")
        if int(self.n_folds) < 1 or (int(self.n_folds) > 1 and self.holdout != "random"):
            raise InputError(
                f"n_folds must be 1, or > 1 with holdout='random'; got "
                f"{self.n_folds} with holdout={self.holdout!r}"
            )
        if self.objective not in ("rank:ndcg", "rank:pairwise"):
            raise InputError(
                f"objective must be 'rank:ndcg' or 'rank:pairwise', got {self.objective!r}"
            )

    def _fit_stage(
        self,
        X: sp.csr_matrix,
        context: FitContext,
        sequences: list[np.ndarray],
        *,
        carve: bool = False,
    ) -> None:
        """Fit the generators and the item statistics on ``X``.

        A ``carve`` stage's generators take ``carve_params`` over their own. The
        final stage (the whole of ``X``) takes a generator the run already fitted
        (``context.fitted``) with the same class and parameters as it is instead
        of fitting it again; a carve never does, as those have seen its labels.
        """
        from recsys.models import make_model

        params = self.generator_params or {}
        carve_params = (self.carve_params or {}) if carve else {}
        self.generators_ = {}
        self.reused_ = []
        for label, name in map(parse_generator, self.generators):
            model = make_model(name, **{**params.get(label, {}), **carve_params.get(label, {})})
            fitted = None if carve else _fitted_sibling(model, label, name, X, context)
            if fitted is not None:
                self.reused_.append(label)
                self.generators_[label] = fitted
            else:
                self.generators_[label] = model.fit(X, context)
        if self.reused_:
            progress.info(
                "ranker: took the run's fitted %s (same parameters, same data) "
                "instead of fitting them again",
                ", ".join(self.reused_),
            )
        self.item_stats_ = _item_stats(X, context, sequences, self.item_genres_)
        self.activity_sorted_ = np.sort(np.diff(X.indptr)).astype(np.float64)
        self.times_ = _Times.build(X, context.timestamps)
        self.follows_ = _Follows.build(sequences, X.shape[1]) if self.follows else None
        self.taste_ = _Taste.build(
            X,
            self.item_stats_[:, ITEM_FEATURES.index("item_year")],
            self.item_genres_,
            self.segment_codes_,
        )

    def _fold_rows(
        self, X: sp.csr_matrix, context: FitContext, sequences: list[np.ndarray], fold: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training rows of one fold: generators fitted without the fold's labels."""
        if self.holdout == "cutoff":
            early, labels = split_at_cutoff(X, context.timestamps, self.label_share)
        else:
            early, labels = split_history(
                X,
                sequences,
                self.label_share,
                how=self.holdout,
                seed=self.random_state,
                n_folds=int(self.n_folds),
                fold=fold,
            )
        early_ctx = replace(context, sequences=_trim_sequences(sequences, labels))
        self._fit_stage(early, early_ctx, early_ctx.sequences, carve=True)
        users = np.flatnonzero(np.diff(labels.indptr) > 0)
        if self.max_users is not None and users.size > int(self.max_users):
            rng = np.random.default_rng(None if self.random_state is None else self.random_state)
            users = np.sort(rng.choice(users, int(self.max_users), replace=False))
            progress.info(
                "ranker: learning from a sample of %s of the %s labelled users (max_users)",
                f"{users.size:,}",
                f"{int(np.count_nonzero(np.diff(labels.indptr))):,}",
            )
        return self._training_rows(users, early, labels)

    def _training_rows(
        self, users: np.ndarray, early: sp.csr_matrix, labels: sp.csr_matrix
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, 0/1 labels and user of each candidate row (users with a hit only).

        Users are featurised in blocks, so the generators' dense score rows
        never exceed :data:`_BLOCK_CELLS` cells each, whatever the users.
        """
        block = max(64, _BLOCK_CELLS // max(early.shape[1], 1))
        starts = range(0, max(users.size, 1), block)
        chunks = [(s, *self._features(users[s : s + block], early)) for s in starts]
        feats = np.concatenate([f for _, f, _, _ in chunks])
        r = np.concatenate([rows + s for s, _, rows, _ in chunks])
        c = np.concatenate([cols for _, _, _, cols in chunks])
        pairs = np.column_stack([users[r], c])
        y = np.asarray(labels[pairs[:, 0], pairs[:, 1]]).ravel() > 0
        hit_users = np.unique(pairs[y, 0])
        keep = np.isin(pairs[:, 0], hit_users)
        log.info(
            "ranker training rows: %d candidates of %d users, %.1f%% positive",
            keep.sum(),
            hit_users.size,
            100 * y[keep].mean() if keep.any() else 0,
        )
        return feats[keep], y[keep].astype(np.float32), pairs[keep, 0]

    def _fit_booster(
        self, feats: np.ndarray, y: np.ndarray, users: np.ndarray, groups: np.ndarray
    ) -> None:
        """Pick XGBoost's setting on the first bag's validation users, then bag.

        Averaging boosters that saw different users steadies the ranking: on
        ML-100K ``msr`` single boosters differ by up to 0.005 NDCG@10 between
        carves, more than most features add.
        """
        import xgboost as xgb

        if groups.size == 0:
            raise InputError(
                "ranker: no user has a held-out interaction among its candidates; "
                "the training data is too small to learn a ranking"
            )
        seed = int(self.random_state or 0)
        self.validation_, self.boosters_ = [], []
        bags = Ticker("ranker: boosters trained", int(self.n_bags), every_s=0)
        dfit, dval = self._carve(xgb, feats, y, users, groups, seed)
        for setting in _grid(self.param_grid or DEFAULT_GRID):
            booster, score = self._early_stopped(xgb, setting, dfit, dval, seed)
            self.boosters_.append(booster)
            self.validation_.append(
                {**setting, "n_rounds": booster.num_boosted_rounds(), "ndcg@10": score}
            )
        best = max(
            range(len(self.validation_)),
            key=lambda i: (self.validation_[i]["ndcg@10"], -self.validation_[i]["n_rounds"]),
        )
        self.best_params_ = {
            k: v for k, v in self.validation_[best].items() if k not in ("n_rounds", "ndcg@10")
        }
        self.boosters_ = [self.boosters_[best]]
        rounds = self.boosters_[0].num_boosted_rounds()
        bags.tick(note=f"{rounds} rounds")
        for bag in range(1, int(self.n_bags)):
            dfit, dval = self._carve(xgb, feats, y, users, groups, seed + bag)
            booster, score = self._fixed_rounds(
                xgb, self.best_params_, dfit, dval, seed + bag, rounds
            )
            self.boosters_.append(booster)
            self.validation_.append(
                {"bag": bag, "n_rounds": booster.num_boosted_rounds(), "ndcg@10": score}
            )
            bags.tick(note=f"{booster.num_boosted_rounds()} rounds, validation NDCG@10 {score:.4f}")
        # Scoring runs one thread per booster call: the candidates of one
        # request are a few hundred rows, where a second OpenMP thread costs
        # more than it gives (0.6 vs 5.7 ms per call on 2 busy cores), and
        # many users' batches already run side by side (Recommender.recommend).
        for booster in self.boosters_:
            booster.set_param({"nthread": 1})
        self.n_rounds_ = [b.num_boosted_rounds() for b in self.boosters_]
        gains = [b.get_score(importance_type="total_gain") for b in self.boosters_]
        self.feature_importances_ = {
            f: float(sum(g.get(f, 0.0) for g in gains)) / len(gains) for f in self.feature_names_
        }

    def _carve(
        self,
        xgb: Any,
        feats: np.ndarray,
        y: np.ndarray,
        users: np.ndarray,
        groups: np.ndarray,
        seed: int,
    ) -> tuple[Any, Any]:
        """Fit and validation DMatrix of one bag (a seeded ``val_share`` of users validates)."""
        fit = _carve_users(users, self.val_share, seed)
        return (
            _dmatrix(xgb, feats[fit], y[fit], groups[fit], self.feature_names_),
            _dmatrix(xgb, feats[~fit], y[~fit], groups[~fit], self.feature_names_),
        )

    def _early_stopped(
        self, xgb: Any, setting: dict, dfit: Any, dval: Any, seed: int
    ) -> tuple[Any, float]:
        """A booster cut at its best validation round, and its validation NDCG@10.

        Without validation users (tiny data) it trains ``min(50, max_rounds)`` rounds.
        """
        params = self._xgb_params(setting, seed)
        if dval.num_row() == 0:
            return xgb.train(params, dfit, num_boost_round=min(50, int(self.max_rounds))), 0.0
        history: dict = {}
        booster = xgb.train(
            params,
            dfit,
            num_boost_round=int(self.max_rounds),
            evals=[(dval, "val")],
            early_stopping_rounds=_PATIENCE,
            evals_result=history,
            verbose_eval=False,
        )
        best = booster.best_iteration
        return booster[: best + 1], float(history["val"]["ndcg@10"][best])

    def _fixed_rounds(
        self, xgb: Any, setting: dict, dfit: Any, dval: Any, seed: int, rounds: int
    ) -> tuple[Any, float]:
        """A booster of ``rounds`` rounds (the first bag's best), and its validation NDCG@10.

        Validated once, at the end: evaluating every round for early stopping took
        a third of each round (83 vs 55 ms on ML-100K ``msr``'s 550k candidate
        rows), and the patience rounds past the best cost as much again.
        """
        params = self._xgb_params(setting, seed)
        booster = xgb.train(params, dfit, num_boost_round=max(int(rounds), 1))
        if dval.num_row() == 0:
            return booster, 0.0
        score = booster.eval(dval, name="val")  # "[0]\tval-ndcg@10:0.30..."
        return booster, float(score.rsplit(":", 1)[1])

    def _xgb_params(self, setting: dict, seed: int) -> dict:
        return {
            "objective": self.objective,
            "eval_metric": "ndcg@10",
            "tree_method": "hist",
            "nthread": int(self.n_jobs),
            "seed": seed,
            "lambdarank_pair_method": "topk",
            "lambdarank_num_pair_per_sample": 10,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            **setting,
        }

    # ---------------------------------------------------------------- scoring
    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        """Candidates get the booster's score; every other item scores below them all.

        Seen items are never candidates. Ties in the booster's output are broken
        by the candidates' mean rank over the generators (a 1e-4-scaled term).
        """
        feats, r, c = self._features(users, X)
        out = np.full((users.size, self.n_items_), -np.inf, dtype=np.float64)
        if r.size == 0:
            return np.zeros((users.size, self.n_items_), dtype=np.float32)
        out[r, c] = self._candidate_scores(feats)
        floor = np.nanmin(np.where(np.isfinite(out), out, np.nan), axis=1, keepdims=True)
        floor = np.nan_to_num(floor, nan=0.0)
        return np.where(np.isfinite(out), out, floor - 1.0).astype(np.float32)

    def _top_k(
        self, users: np.ndarray, X: sp.csr_matrix, k: int, filter_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists of :meth:`_score`, ranked among the candidates alone.

        Every item outside a user's candidates scores below them all, so a
        user with at least ``k`` candidates has their top-``k`` among them:
        no dense row is built or partitioned for the ranker's own scores
        (the rows the generators score are the cost that stays). Users with
        fewer candidates (they have seen nearly everything) take the dense
        path. Users are featurised in blocks of :data:`_BLOCK_CELLS` cells.
        """
        items_out = np.full((users.size, k), -1, dtype=np.int64)
        scores_out = np.full((users.size, k), -np.inf, dtype=np.float32)
        block = max(64, _BLOCK_CELLS // max(self.n_items_, 1))
        for start in range(0, users.size, block):
            part = users[start : start + block]
            feats, r, c = self._features(part, X)
            counts = np.bincount(r, minlength=part.size)
            if r.size:
                # float32 first, as _score returns: ties then break by item, as in top_k.
                s = self._candidate_scores(feats).astype(np.float32)
                order = np.lexsort((c, -s, r))
                r, c, s = r[order], c[order], s[order]
                slot = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
                kept = slot < k
                items_out[start + r[kept], slot[kept]] = c[kept]
                scores_out[start + r[kept], slot[kept]] = s[kept]
            short = np.flatnonzero(counts < k)
            if short.size:
                items_out[start + short], scores_out[start + short] = _dense_top_k(
                    self, part[short], X, k, filter_seen
                )
        return items_out, scores_out

    def _candidate_scores(self, feats: np.ndarray) -> np.ndarray:
        """The boosters' mean margin, ties broken by the generators' mean rank."""
        # In place: no DMatrix per call (its construction and the feature-name
        # checks cost more than the trees for one user's candidates).
        margin = np.mean([b.inplace_predict(feats) for b in self.boosters_], axis=0)
        mean_rank = feats[:, self._rank_columns()].mean(axis=1)
        return margin - 1e-4 * mean_rank / (self.n_candidates + 1)

    def _rank_columns(self) -> list[int]:
        return [self.feature_names_.index(f"{g}_rank") for g in self.generators_]

    # --------------------------------------------------------------- features
    def _features(
        self, users: np.ndarray, X: sp.csr_matrix
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature rows of every candidate of ``users``, with its position in
        ``users`` and its item column (sorted by position, then item).

        Generators score ``X``'s rows of the users, with the items in ``X`` excluded.
        """
        rows = X[users]
        if not rows.has_canonical_format:
            rows.sum_duplicates()
        seen = rows.nonzero()
        scores, moments = {}, {}
        for name, model in self.generators_.items():
            s = np.asarray(model._score(users, X), dtype=np.float32)  # noqa: SLF001 - same package
            moments[name] = _unseen_moments(s, seen)
            s[seen] = -np.inf
            scores[name] = s
        n = min(int(self.n_candidates), self.n_items_)
        ranked = {name: top_k(s, n) for name, s in scores.items()}
        tops = {name: items for name, (items, _) in ranked.items()}
        # The union of the generators' top-n, as (row, item) keys: sorted by
        # row, then item, without a dense users × items mask.
        row_of = np.repeat(np.arange(users.size, dtype=np.int64), n)
        keys = [(row_of * self.n_items_ + t.ravel())[t.ravel() >= 0] for t in tops.values()]
        r, c = np.divmod(np.unique(np.concatenate(keys)), self.n_items_)
        parts = [_generator_features(scores[g], *ranked[g], moments[g], r, c, n) for g in scores]
        parts.append(_user_features(rows, self.activity_sorted_)[r])
        parts.append(self.item_stats_[c])
        parts.append(self._pair_features(rows, r, c, parts[: len(scores)], n))
        parts.append(_time_features(self.times_, users[r], c))
        parts.append(_sequence_features(self.times_, rows, users)[r])
        if getattr(self, "follows_", None) is not None:  # rankers saved before it had none
            parts.append(self.follows_.features(users, r, c))
        parts.append(self.taste_.features(rows, users, r, c))
        return np.hstack(parts).astype(np.float32), r, c

    def _pair_features(
        self, rows: sp.csr_matrix, r: np.ndarray, c: np.ndarray, gen_parts: list[np.ndarray], n: int
    ) -> np.ndarray:
        ranks = np.column_stack([p[:, 1] for p in gen_parts])
        n_gen = (ranks <= n).sum(axis=1).astype(np.float32)
        if self.item_genres_ is None:
            nan = np.full(r.size, np.nan, dtype=np.float32)
            return np.column_stack([nan, nan, n_gen])
        taste = _normalise_l1(np.asarray((rows @ self.item_genres_).todense()))
        item_g = self.item_genres_[c]
        user_taste = taste[r]
        affinity = np.asarray(item_g.multiply(user_taste).sum(axis=1)).ravel()
        best = np.asarray(item_g.multiply(user_taste).max(axis=1).todense()).ravel()
        return np.column_stack([affinity, best, n_gen])


class _Times:
    """When each user was active and when each item was interacted with.

    Built from the timestamps of ``X``'s own interactions only, so a fold's
    held-out labels never inform the features the ranker learns from.
    """

    def __init__(
        self,
        user_first: np.ndarray,
        user_last: np.ndarray,
        keys: np.ndarray,
        span: float,
        all_times: np.ndarray,
        item_first: np.ndarray,
        item_last: np.ndarray,
    ) -> None:
        self.user_first, self.user_last = user_first, user_last
        self.keys, self.span, self.all_times = keys, span, all_times
        self.item_first, self.item_last = item_first, item_last

    @classmethod
    def build(cls, X: sp.csr_matrix, timestamps: sp.spmatrix | None) -> _Times | None:
        """``None`` without timestamps (the time features are then NaN)."""
        if timestamps is None:
            return None
        T = sp.csr_matrix(timestamps, dtype=np.float64)
        if T.shape != X.shape:
            raise InputError(f"context.timestamps has shape {T.shape}, X has {X.shape}")
        pattern = X.copy()
        pattern.data = np.ones_like(pattern.data)
        T = T.multiply(pattern).tocsr()
        T.eliminate_zeros()
        coo = T.tocoo()
        users, items, t = coo.row, coo.col, coo.data
        n_users, n_items = X.shape
        user_first = np.full(n_users, np.nan)
        user_last = np.full(n_users, np.nan)
        item_first = np.full(n_items, np.nan)
        item_last = np.full(n_items, np.nan)
        if t.size:
            np.fmin.at(user_first, users, t)
            np.fmax.at(user_last, users, t)
            np.fmin.at(item_first, items, t)
            np.fmax.at(item_last, items, t)
        origin = t.min() if t.size else 0.0
        span = float(t.max() - origin + 1) if t.size else 1.0
        keys = np.sort(items * span + (t - origin))
        return cls(
            user_first - origin,
            user_last - origin,
            keys,
            span,
            np.sort(t - origin),
            item_first - origin,
            item_last - origin,
        )

    def features(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``(len(users), len(TIME_FEATURES))`` for each (user row, item column) pair."""
        first, last = self.user_first[users], self.user_last[users]
        cols = []
        for days in _WINDOWS:
            lo = np.clip(first - days * _DAY, 0, self.span - 1)
            hi = np.clip(last + days * _DAY, 0, self.span - 1)
            base = items * self.span
            n_item = np.searchsorted(self.keys, base + hi, side="right") - np.searchsorted(
                self.keys, base + lo, side="left"
            )
            n_all = np.searchsorted(self.all_times, hi, side="right") - np.searchsorted(
                self.all_times, lo, side="left"
            )
            share = np.divide(n_item, n_all, out=np.zeros(users.size), where=n_all > 0)
            cols.append(np.where(np.isfinite(first), share, np.nan))
        cols.append((self.item_first[items] - last) / _DAY)
        cols.append((first - self.item_last[items]) / _DAY)
        return np.column_stack(cols)


class _Follows:
    """Which items follow which in the users' sequences, behind :data:`FOLLOW_FEATURES`.

    Built from one stage's sequences (a fold's early part while the ranker
    learns, so its labels never count as followers).
    """

    def __init__(self, shares: sp.csr_matrix, latest: np.ndarray) -> None:
        #: items × items: the share of the row item's followers that were the
        #: column item (its :data:`_FOLLOWERS` largest).
        self.shares = shares
        #: each user's latest items, newest first (-1 where the sequence is shorter).
        self.latest = latest

    @classmethod
    def build(cls, sequences: list[np.ndarray], n_items: int) -> _Follows:
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        items = (
            np.concatenate(sequences).astype(np.int64)
            if lengths.sum()
            else np.zeros(0, dtype=np.int64)
        )
        owner = np.repeat(np.arange(len(sequences)), lengths)
        before, after, weight = [], [], []
        for gap in range(1, _FOLLOW_WINDOW + 1):
            same = owner[:-gap] == owner[gap:]
            before.append(items[:-gap][same])
            after.append(items[gap:][same])
            weight.append(np.full(int(same.sum()), 1.0 / gap))
        F = sp.csr_matrix(
            (np.concatenate(weight), (np.concatenate(before), np.concatenate(after))),
            shape=(n_items, n_items),
        )
        F.sum_duplicates()
        totals = np.asarray(F.sum(axis=1)).ravel()
        rows = np.repeat(np.arange(n_items), np.diff(F.indptr))
        F.data /= totals[rows]
        order = np.lexsort((-F.data, rows))
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size) - np.repeat(F.indptr[:-1], np.diff(F.indptr))
        keep = rank < _FOLLOWERS
        F = sp.csr_matrix((F.data[keep], (rows[keep], F.indices[keep])), shape=F.shape)
        latest = np.full((len(sequences), _FOLLOW_RECENT), -1, dtype=np.int64)
        ends = np.cumsum(lengths)
        for back in range(_FOLLOW_RECENT):
            has = lengths > back
            latest[has, back] = items[ends[has] - 1 - back]
        return cls(F.astype(np.float32), latest)

    def features(self, users: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """``(len(r), len(FOLLOW_FEATURES))`` for pairs (user ``users[r]``, item ``c``):
        each feature is a row of ``users`` times :attr:`shares`, read at the pairs."""
        latest = self.latest[users]
        has = latest >= 0
        row = np.broadcast_to(np.arange(users.size)[:, None], latest.shape)
        weight = np.broadcast_to(1.0 / np.arange(1, latest.shape[1] + 1), latest.shape)
        shape = (users.size, self.shares.shape[0])
        last = sp.csr_matrix(
            (np.ones(int(has[:, 0].sum())), (row[has[:, 0], 0], latest[has[:, 0], 0])), shape=shape
        )
        recent = sp.csr_matrix((weight[has], (row[has], latest[has])), shape=shape)
        # Sorted rows let SciPy find each pair by bisection (a product's rows are
        # unsorted): 0.06-0.08 s for 8,000 users' candidates, against 0.26 s.
        return np.column_stack(
            [np.asarray((M @ self.shares).sorted_indices()[r, c]).ravel() for M in (last, recent)]
        )


class _Taste:
    """Item and segment statistics behind :data:`TASTE_FEATURES` and the segment lifts.

    Built from one interaction matrix (a fold's early part while the ranker
    learns, all of ``X`` for scoring); the user's side comes from the rows
    being scored.
    """

    def __init__(
        self,
        years: np.ndarray,
        log_pop: np.ndarray,
        genres: sp.csr_matrix | None,
        genre_share: np.ndarray | None,
        segments: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.years, self.log_pop = years, log_pop
        self.genres, self.genre_share = genres, genre_share
        self.segments = segments
        decade = np.floor(np.nan_to_num(years, nan=-10.0) / 10)
        self.decades = (decade - decade.min()).astype(np.int64)

    @classmethod
    def build(
        cls,
        X: sp.csr_matrix,
        years: np.ndarray,
        genres: sp.csr_matrix | None,
        segment_codes: list[np.ndarray],
    ) -> _Taste:
        binary = (X > 0).astype(np.float64).tocsr()
        counts = np.asarray(binary.sum(axis=0)).ravel()
        genre_share = None
        if genres is not None:
            per_genre = genres.T @ counts + 0.5
            genre_share = per_genre / per_genre.sum()
        share = (counts + 1) / (counts + 1).sum()
        segments = []
        for codes in segment_codes:
            known = codes >= 0
            S = sp.csr_matrix(
                (np.ones(int(known.sum())), (codes[known], np.flatnonzero(known))),
                shape=(int(codes.max()) + 1 if known.any() else 0, X.shape[0]),
            )
            per_segment = np.asarray((S @ binary).todense()) + 1
            lift = per_segment / per_segment.sum(axis=1, keepdims=True) / share
            segments.append((codes, lift))
        return cls(years, np.log1p(counts), genres, genre_share, segments)

    def features(
        self, rows: sp.csr_matrix, users: np.ndarray, r: np.ndarray, c: np.ndarray
    ) -> np.ndarray:
        """``(len(r), len(TASTE_FEATURES) + n_segments)`` for pairs (``rows[r]``, item ``c``)."""
        B = (rows > 0).astype(np.float64).tocsr()
        year_mean, year_sd = _row_moments(B, self.years)
        pop_mean, pop_sd = _row_moments(B, self.log_pop)
        year_gap = self.years[c] - year_mean[r]
        pop_gap = self.log_pop[c] - pop_mean[r]
        per_decade = np.asarray((B @ self._decade_matrix()).todense())
        decade_share = _normalise_l1(per_decade)[r, self.decades[c]]
        cols = [
            year_gap / (year_sd[r] + 1.0),
            np.abs(year_gap),
            year_mean[r],
            decade_share,
            self._genre_lift(B, r, c),
            pop_gap / (pop_sd[r] + 0.1),
            np.abs(pop_gap),
            pop_mean[r],
        ]
        for codes, lift in self.segments:
            code = codes[users[r]]
            cols.append(
                np.where(code >= 0, lift[np.maximum(code, 0), c], np.nan)
                if lift.size
                else np.full(r.size, np.nan)
            )
        return np.column_stack(cols)

    def _decade_matrix(self) -> sp.csr_matrix:
        """Items × decades one-hot, built once (a request would otherwise pay for it)."""
        D = self.__dict__.get("_decades_onehot")
        if D is None:
            n = self.decades.size
            D = self._decades_onehot = sp.csr_matrix((np.ones(n), (np.arange(n), self.decades)))
        return D

    def _genre_lift(self, B: sp.csr_matrix, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Mean over the candidate's genres of log(user's genre share / catalogue share)."""
        if self.genres is None:
            return np.full(r.size, np.nan)
        taste = _normalise_l1(np.asarray((B @ self.genres).todense()) + 0.5)
        log_lift = np.log(taste / self.genre_share[None, :])
        item_g = self.genres[c]
        n_genres = np.maximum(np.diff(item_g.indptr), 1)
        return np.asarray(item_g.multiply(log_lift[r]).sum(axis=1)).ravel() / n_genres


def _row_moments(B: sp.csr_matrix, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``values`` over each row's items (NaN values skipped)."""
    known = np.isfinite(values)
    v = np.where(known, values, 0.0)
    n = B @ known.astype(np.float64)
    mean = np.divide(B @ v, n, out=np.full(n.size, np.nan), where=n > 0)
    sq = np.divide(B @ v**2, n, out=np.full(n.size, np.nan), where=n > 0)
    return mean, np.sqrt(np.maximum(sq - mean**2, 0))


def _segment_codes(context: FitContext, n_users: int, columns: tuple[str, ...]) -> list[np.ndarray]:
    """Per segment column, each user row's segment (-1 unknown; all -1 without the column).

    Numeric columns are cut into up to ``_SEGMENT_BINS`` quantile bins.
    """
    table = context.user_features
    out = []
    for col in columns:
        if table is None or col not in table.columns or len(table) != n_users:
            out.append(np.full(n_users, -1, dtype=np.int64))
            continue
        values = table[col]
        if pd.api.types.is_numeric_dtype(values):
            values = pd.qcut(values.astype(float), _SEGMENT_BINS, duplicates="drop")
        out.append(pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64))
    return out


def _sequence_features(times: _Times | None, rows: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """``(len(users), len(SEQUENCE_FEATURES))``: history length, active and idle days."""
    length = np.diff(rows.indptr).astype(np.float64)
    if times is None:
        nan = np.full(users.size, np.nan)
        return np.column_stack([length, nan, nan])
    first, last = times.user_first[users], times.user_last[users]
    end = times.span - 1
    return np.column_stack([length, (last - first) / _DAY, (end - last) / _DAY])


def _time_features(times: _Times | None, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    if times is None:
        return np.full((users.size, len(TIME_FEATURES)), np.nan)
    return times.features(users, items)


# ------------------------------------------------------------------ helpers
def split_history(
    X: sp.csr_matrix,
    sequences: list[np.ndarray],
    share: float,
    *,
    how: str = "time",
    seed: int | None = None,
    n_folds: int = 1,
    fold: int = 0,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split ``X`` into each user's kept interactions and a held-out ``share`` of them.

    A user with ``n`` distinct items gives ``floor(share * n)`` items (at most
    ``n - 1``, so everyone keeps at least one) to the label part: the latest
    ones by position in ``sequences`` with ``how="time"``, a seeded random
    draw with ``how="random"``. With ``how="random"`` and ``n_folds > 1``,
    each user's items are dealt at random into ``n_folds`` disjoint folds (the
    same deal for every ``fold`` given one ``seed``) and fold ``fold`` is the
    label part (``share`` is then unused); users with one item give none.

    Returns:
        ``(early, labels)``: ``early`` keeps the weights of ``X`` for the earlier
        items; ``labels`` is 1 for each latest item.
    """
    if how not in ("time", "random"):
        raise InputError(f"how must be 'time' or 'random', got {how!r}")
    users, items, pos, length = _flatten_last_occurrence(sequences, X.shape[1])
    if how == "random":
        order = np.lexsort((np.random.default_rng(seed).random(users.size), users))
        pos = np.empty_like(pos)
        pos[order] = np.arange(users.size) - np.repeat(
            np.cumsum(np.bincount(users, minlength=len(sequences)))
            - np.bincount(users, minlength=len(sequences)),
            np.bincount(users, minlength=len(sequences)),
        )
    if how == "random" and n_folds > 1:
        late = (pos % n_folds == fold) & (length >= 2)
    else:
        n_late = np.minimum(np.floor(share * length), length - 1)
        late = pos >= length - n_late
    labels = sp.csr_matrix(
        (np.ones(int(late.sum()), dtype=np.float32), (users[late], items[late])), shape=X.shape
    )
    labels.data[:] = 1.0
    early = (X - X.multiply(labels)).tocsr()
    early.eliminate_zeros()
    return early, labels


def split_at_cutoff(
    X: sp.csr_matrix, timestamps: sp.spmatrix | None, share: float
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split ``X`` at one moment: the latest ``share`` of its interactions by time are
    labels, as a temporal holdout takes the last stretch of everyone's activity.

    Only users with an interaction before the cutoff get labels (the others would
    be cold to the generators, as users without training history are to a model
    under test). Pairs without a time stay on the early side.

    Returns:
        ``(early, labels)`` as :func:`split_history` does.
    """
    times = pair_times(X, timestamps)
    if times is None or not times.any():
        raise InputError("the ranker's holdout='cutoff' needs timestamps in the training data")
    cutoff = np.quantile(times[times != 0], 1.0 - share)
    late = X.copy()
    late.data = ((times != 0) & (times > cutoff)).astype(np.float32)
    late.eliminate_zeros()
    early = (X - X.multiply(late)).tocsr()
    early.eliminate_zeros()
    has_history = np.diff(early.indptr) > 0
    labels = sp.csr_matrix(sp.diags(has_history.astype(np.float32)) @ late)
    labels.eliminate_zeros()
    early = (X - X.multiply(labels)).tocsr()  # labels dropped for the cold stay in early
    early.eliminate_zeros()
    return early, labels


def _flatten_last_occurrence(sequences: list[np.ndarray], n_items: int) -> tuple[np.ndarray, ...]:
    """Per user, each distinct item with its position among distinct items and their count."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = (
        np.concatenate(sequences).astype(np.int64) if lengths.sum() else np.empty(0, dtype=np.int64)
    )
    key = users * n_items + items
    # keep each (user, item)'s last occurrence, in time order
    _, last = np.unique(key[::-1], return_index=True)
    keep = np.sort(items.size - 1 - last)
    users, items = users[keep], items[keep]
    counts = np.bincount(users, minlength=len(sequences))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.arange(users.size) - starts
    return users, items, pos, counts[users]


def _trim_sequences(sequences: list[np.ndarray], labels: sp.csr_matrix) -> list[np.ndarray]:
    """Sequences without the label items (for generators that read sequences)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if lengths.sum() == 0:
        return [np.asarray(s, dtype=np.int64) for s in sequences]
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences).astype(np.int64)
    keep = np.asarray(labels[users, items]).ravel() == 0
    kept = np.bincount(users[keep], minlength=len(sequences))
    return np.split(items[keep], np.cumsum(kept)[:-1])


def _sequences(X: sp.csr_matrix, context: FitContext) -> list[np.ndarray]:
    """Time-ordered items per user; without them, ``X``'s column order stands in."""
    if context.sequences is not None:
        if len(context.sequences) != X.shape[0]:
            raise InputError(
                f"context.sequences has {len(context.sequences)} users but X has {X.shape[0]}"
            )
        return [np.asarray(s, dtype=np.int64) for s in context.sequences]
    log.warning("ranker: no sequences in the context; item order stands in for time")
    return np.split(X.indices.astype(np.int64), X.indptr[1:-1])


def _fitted_sibling(
    model: Recommender, label: str, name: str, X: sp.csr_matrix, context: FitContext
) -> Recommender | None:
    """The run's fitted ``name`` (``context.fitted``) when it is ``model``, generator
    ``label``, fitted on ``X``: same class, same parameters, same shape; otherwise
    ``None``."""
    load = context.fitted.get(name)
    if load is None:
        return None
    sibling = load()
    same = (
        type(sibling) is type(model)
        and sibling.get_params() == model.get_params()
        and (getattr(sibling, "n_users_", None), getattr(sibling, "n_items_", None)) == X.shape
    )
    if not same:
        log.info("ranker: the run's %s is not its generator %r (other settings)", name, label)
    return sibling if same else None


def _item_genres(context: FitContext, n_items: int) -> sp.csr_matrix | None:
    items = context.items
    if items is None or GENRES_COL not in items.columns:
        return None
    from recsys.models.content import align_items

    aligned = align_items(items, n_items, context.item_ids)
    lists = aligned[GENRES_COL].fillna("").astype(str).str.split("|").explode()
    lists = lists[lists.str.len() > 0]
    names = pd.Index(sorted(lists.unique()))
    G = sp.csr_matrix(
        (
            np.ones(len(lists), dtype=np.float32),
            (lists.index.to_numpy(), names.get_indexer(lists.to_numpy())),
        ),
        shape=(n_items, len(names)),
    )
    G.sum_duplicates()
    G.data[:] = 1.0
    return G


def _item_stats(
    X: sp.csr_matrix, context: FitContext, sequences: list[np.ndarray], genres: sp.csr_matrix | None
) -> np.ndarray:
    """``(n_items, len(ITEM_FEATURES))``: popularity, mean rating, lateness, year."""
    n = X.shape[1]
    pop = np.bincount(X.indices, minlength=n).astype(np.float64)
    total = np.asarray(X.sum(axis=0)).ravel()
    mean = np.divide(total, pop, out=np.full(n, np.nan), where=pop > 0)
    share = pop / max(X.nnz, 1)
    users, items, pos, length = _flatten_last_occurrence(sequences, n)
    present = np.asarray(X[users, items]).ravel() > 0 if users.size else np.zeros(0, dtype=bool)
    rel = pos / np.maximum(length - 1, 1)
    late = np.bincount(items[present], weights=(rel[present] >= 1 - _LATE), minlength=n)
    pos_sum = np.bincount(items[present], weights=rel[present], minlength=n)
    cnt = np.bincount(items[present], minlength=n)
    late_share = np.divide(late, cnt, out=np.full(n, np.nan), where=cnt > 0)
    pos_mean = np.divide(pos_sum, cnt, out=np.full(n, np.nan), where=cnt > 0)
    return np.column_stack([share, mean, late_share, pos_mean, _item_years(context, n)])


def _item_years(context: FitContext, n_items: int) -> np.ndarray:
    items = context.items
    if items is None or YEAR_COL not in items.columns:
        return np.full(n_items, np.nan)
    from recsys.models.content import align_items

    aligned = align_items(items, n_items, context.item_ids)
    return pd.to_numeric(aligned[YEAR_COL], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _user_features(rows: sp.csr_matrix, population: np.ndarray) -> np.ndarray:
    """Activity percentile among ``population`` (sorted counts), rating mean and std."""
    counts = np.diff(rows.indptr).astype(np.float64)
    pct = np.searchsorted(population, counts, side="right") / max(population.size, 1)
    sums = np.asarray(rows.sum(axis=1)).ravel()
    sq = np.asarray(rows.multiply(rows).sum(axis=1)).ravel()
    mean = np.divide(sums, counts, out=np.full(counts.size, np.nan), where=counts > 0)
    var = np.divide(sq, counts, out=np.full(counts.size, np.nan), where=counts > 0) - mean**2
    return np.column_stack([pct, mean, np.sqrt(np.maximum(var, 0))])


def _generator_features(
    scores: np.ndarray,
    top: np.ndarray,
    top_scores: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray],
    r: np.ndarray,
    c: np.ndarray,
    n: int,
) -> np.ndarray:
    """Rank (``n + 1`` beyond the top-``n``), score / the user's best score, z-score.

    All three are free of the score's scale, which grows with the amount of
    data (the ranker learns on generators fitted on less data than it scores with).
    ``top`` and ``top_scores`` are the generator's top-``n`` of each row
    (:func:`top_k` of the masked ``scores``, ties to the lower index, ``-1``
    for empty slots): only those ranks are ever needed, so no row is sorted
    whole, and the best score is the first. ``moments`` are the mean and
    standard deviation of each row's unseen scores (:func:`_unseen_moments`).
    """
    mu, sd = moments
    best = top_scores[:, 0].astype(np.float64)
    s = scores[r, c]
    # Each pair's rank by lookup among the row's top-n (sorted keys), not
    # through a dense rank matrix.
    n_rows, n_top = top.shape
    n_cols = scores.shape[1]
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_top)
    filled = top.ravel() >= 0
    top_keys = rows[filled] * n_cols + top.ravel()[filled]
    slots = np.tile(np.arange(1, n_top + 1, dtype=np.int32), n_rows)[filled]
    order = np.argsort(top_keys)
    top_keys, slots = top_keys[order], slots[order]
    asked = r.astype(np.int64) * n_cols + c
    at = np.minimum(np.searchsorted(top_keys, asked), max(top_keys.size - 1, 0))
    found = top_keys[at] == asked if top_keys.size else np.zeros(asked.size, dtype=bool)
    rank = np.where(found, slots[at] if slots.size else 0, n + 1)
    z = np.divide(s - mu[r], sd[r], out=np.zeros(r.size), where=sd[r] > 0)
    ratio = np.divide(s, best[r], out=np.zeros(r.size), where=best[r] > 0)
    return np.column_stack([rank, ratio, z])


def _unseen_moments(
    scores: np.ndarray, seen: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and standard deviation over its finite scores outside the
    ``seen`` cells, in float64; a row with none gets 0, 0.

    Sums over the whole row (two passes, no temporary) less the seen cells'
    share, before those are masked; a row with a non-finite score anywhere
    takes :func:`_finite_moments` instead.
    """
    n_rows, n_cols = scores.shape
    r, c = seen
    seen_scores = scores[r, c].astype(np.float64)
    count = n_cols - np.bincount(r, minlength=n_rows)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are redone below
        total = scores.sum(axis=1, dtype=np.float64) - np.bincount(
            r, weights=seen_scores, minlength=n_rows
        )
        squares = np.einsum("ij,ij->i", scores, scores, dtype=np.float64) - np.bincount(
            r, weights=seen_scores**2, minlength=n_rows
        )
        mu = np.divide(total, count, out=np.zeros(n_rows), where=count > 0)
        var = np.divide(squares, count, out=np.zeros(n_rows), where=count > 0) - mu**2
    sd = np.sqrt(np.maximum(var, 0.0))
    odd = np.flatnonzero(~(np.isfinite(total) & np.isfinite(squares)))
    if odd.size:
        masked = scores[odd]
        inside = np.isin(r, odd)
        masked[np.searchsorted(odd, r[inside]), c[inside]] = -np.inf
        _, mu[odd], sd[odd] = _finite_moments(masked)
    return mu, sd


def _finite_moments(scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each row's best, mean and standard deviation over its finite scores
    (``-inf`` marks seen items), in float64; a row with none gets ``-inf``, 0, 0."""
    finite = np.isfinite(scores)
    count = finite.sum(axis=1)
    zeroed = np.where(finite, scores, 0.0)
    total = zeroed.sum(axis=1, dtype=np.float64)
    mu = np.divide(total, count, out=np.zeros(count.size), where=count > 0)
    zeroed -= mu[:, None].astype(zeroed.dtype)
    zeroed[~finite] = 0.0
    np.square(zeroed, out=zeroed)
    squares = zeroed.sum(axis=1, dtype=np.float64)
    var = np.divide(squares, count, out=np.zeros(count.size), where=count > 0)
    if scores.shape[1] == 0:
        return np.full(scores.shape[0], -np.inf), mu, np.sqrt(var)
    best = np.where(finite, scores, -np.inf).max(axis=1).astype(np.float64)
    return best, mu, np.sqrt(var)


def _normalise_l1(M: np.ndarray) -> np.ndarray:
    totals = M.sum(axis=1, keepdims=True)
    return np.divide(M, totals, out=np.zeros_like(M, dtype=np.float64), where=totals > 0)


def _carve_users(groups: np.ndarray, share: float, seed: int | None) -> np.ndarray:
    """Boolean mask of rows whose user stays in the fit part (the rest validates)."""
    users = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_val = int(round(share * users.size)) if users.size > 1 else 0
    val = rng.choice(users, size=n_val, replace=False) if n_val else np.empty(0, users.dtype)
    return ~np.isin(groups, val)


def _dmatrix(
    xgb: Any, feats: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str]
) -> Any:
    """A DMatrix with one query group per user (rows arrive sorted by user)."""
    _, sizes = np.unique(groups, return_counts=True)
    dm = xgb.DMatrix(feats, label=y, feature_names=names)
    dm.set_group(sizes)
    return dm


def _grid(grid: dict[str, tuple]) -> list[dict]:
    keys = sorted(grid)
    combos = itertools.product(*(grid[k] for k in keys))
    return [dict(zip(keys, values, strict=True)) for values in combos]


def plot_feature_importances(model: XGBRankerRecommender, top: int = 20):
    """A horizontal bar chart of the ranker's ``top`` features by total gain.

    Returns:
        A ``matplotlib.figure.Figure`` (not shown, not saved).
    """
    from matplotlib.figure import Figure

    model._check_fitted()  # noqa: SLF001
    ranked = sorted(model.feature_importances_.items(), key=lambda kv: kv[1])[-top:]
    fig = Figure(figsize=(7, 0.3 * len(ranked) + 1.2))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in ranked], [v for _, v in ranked], color="#4c72b0")
    ax.set_xlabel("total gain")
    ax.set_title("XGBoost ranker: feature importance")
    fig.tight_layout()
    return fig
