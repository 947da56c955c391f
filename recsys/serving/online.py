"""One user's answer at request time: the served model with filters and fresh history.

:class:`OnlineModel` wraps a :class:`~recsys.serving.served.ServedRecommender`
for a service that answers requests in a few milliseconds, one at a time or
several together (:meth:`OnlineModel.recommend_many`: one scoring call for
them all, each answer as it would be alone):

- a known user gets the model's top-K with training items removed, and with
  any ``exclude``-d items and items outside the asked ``genres`` removed;
- recent items (what the user did a minute ago) are folded in without
  retraining where the model scores any history row
  (:attr:`recsys.models.base.Recommender.folds_in`: EASE, item-kNN, ALS,
  content, popularity): a known user's training row plus the recent items, or
  for a brand-new user the recent items alone. A model that cannot (the
  ranker, the attention network) answers a known user from its training row
  with the recent items removed, and a new user through the cold-start
  chain's onboarding path with the recent items as liked items;
- an unknown user without recent items goes down the cold-start chain
  (segment when demographics are given or known, else global popularity);
- :meth:`OnlineModel.similar` gives an item's related items: items co-liked
  with it plus items of similar content, as the chain's onboarding path
  weighs them (so a new item with a description has neighbours too).

Ids are matched to the trained ids' type as :func:`recsys.ids.match_ids` does
("42" finds item 42). Nothing here knows about HTTP or Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.ids import match_ids
from recsys.models.base import top_k
from recsys.serving.served import SERVED_BY_MODEL, ServedRecommender

#: ``served_by`` of :meth:`OnlineModel.similar` lists.
SERVED_BY_SIMILARITY = "similarity"
#: Weight of content similarity beside co-liked similarity (as in the onboarding path).
CONTENT_WEIGHT = 0.3


class UnknownItemsError(InputError):
    """Request item ids the model's catalogue does not have.

    Attributes:
        unknown: the ids, as given.
    """

    def __init__(self, unknown: list[Any], what: str) -> None:
        self.unknown = unknown
        shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        super().__init__(f"unknown item id(s) in {what}: {shown}")


class UnknownGenresError(InputError):
    """Genres the catalogue does not have (or a catalogue without genres)."""


@dataclass(frozen=True)
class Answer:
    """One list, best first.

    Attributes:
        items: external item ids.
        scores: their scores (comparable within one list only).
        served_by: ``model``, a cold-start path (``onboarding``,
            ``segment:<kind>``, ``global``) or ``similarity``.
        folded_in: recent items that changed the history the model scored.
        ignored: recent item ids the catalogue does not know (left out).
        fallback: why the answer is not the one asked for, when it is not
            (``no_fold_in``: the model cannot score the new history).
    """

    items: list[Any]
    scores: list[float]
    served_by: str
    folded_in: int = 0
    ignored: list[Any] = field(default_factory=list)
    fallback: str | None = None


@dataclass(frozen=True)
class Ask:
    """One request for a list: the arguments of :meth:`OnlineModel.recommend`."""

    user_id: object
    k: int
    exclude: np.ndarray | None = None
    genres: np.ndarray | None = None
    recent: Sequence[Any] = ()
    demographics: dict[str, Any] | None = None
    liked_genres: Sequence[str] = ()


@dataclass
class _Plan:
    """How one request is answered: a user row or a history row to score (or the
    cold-start chain's scores), what to leave out, and what to say of it."""

    ignored: list[Any]
    row: int = -1
    history: sp.csr_matrix | None = None
    scores: np.ndarray | None = None
    seen: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    served_by: str = SERVED_BY_MODEL
    fallback: str | None = None
    folded: int = 0


class OnlineModel:
    """Answers to requests, one or several at a time (see the module docstring)."""

    def __init__(self, served: ServedRecommender) -> None:
        self.served = served
        self.model = served.model
        self.X = served.X
        self.items = served.id_map.items
        self.users = served.id_map.users
        self.n_items = len(self.items)
        self._int_users = self.users.dtype.kind in "iu"
        self._int_items = self.items.dtype.kind in "iu"
        self._item_ids = self.items.to_numpy()
        self._column_of = {item: j for j, item in enumerate(self.items.tolist())}
        genres = served.cold_start.item_genres
        self._genres = None if genres is None else (sp.csc_matrix(genres[0]), genres[1])

    # ------------------------------------------------------------------ ids
    def user_id(self, raw: object) -> object:
        """``raw`` in the type the model's user ids have (``"42"`` → ``42``)."""
        if isinstance(raw, str):  # from a URL path: the common case, without pandas
            if not self._int_users:
                return raw
            try:
                return int(raw)
            except ValueError:
                pass
            try:
                number = float(raw)
            except ValueError:
                return raw  # "new-7" stays a string: unknown to an integer index
            return int(number) if number.is_integer() else raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw if self._int_users else str(raw)
        return match_ids([raw], self.users)[0]

    def user_row(self, user_id: object) -> int:
        """The matrix row of a user id as the model stores it, ``-1`` when unknown or
        forgotten (a forget request put them on the forgotten-users list: they are
        answered as a stranger until a model trained without them serves)."""
        try:
            row = self.users.get_loc(user_id)
        except (KeyError, TypeError):
            return -1
        if not isinstance(row, int | np.integer) or self.forgotten(user_id):
            return -1
        return row

    def forgotten(self, user_id: object) -> bool:
        """Whether ``user_id`` (as the model stores it) is on the forgotten-users list."""
        return bool(self.served.forgotten_mask(np.asarray([user_id], dtype=object))[0])

    def item_columns(self, ids: Sequence[Any], what: str, *, strict: bool = True) -> np.ndarray:
        """Columns of request item ids.

        Raises:
            UnknownItemsError: with ``strict``, any id is not in the catalogue
                (without it unknown ids are dropped; see :meth:`unknown_items`).
        """
        cols = self._columns(ids)
        if strict and (cols < 0).any():
            raise UnknownItemsError([i for i, c in zip(ids, cols, strict=True) if c < 0], what)
        return cols[cols >= 0]

    def unknown_items(self, ids: Sequence[Any]) -> list[Any]:
        """The ids of ``ids`` the catalogue does not have."""
        return [i for i, c in zip(ids, self._columns(ids), strict=True) if c < 0]

    def _columns(self, ids: Sequence[Any]) -> np.ndarray:
        """Column of each id, ``-1`` when unknown (a dict look-up each: no pandas per request)."""
        find = self._column_of.get
        return np.fromiter(
            (find(self._item_key(i), -1) for i in ids), dtype=np.int64, count=len(ids)
        )

    def _item_key(self, raw: object) -> object:
        """A request's item id in the catalogue's id type, as :func:`match_ids` reads it."""
        if self._int_items:
            if isinstance(raw, str):
                try:
                    return int(raw)
                except ValueError:
                    return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            return raw
        return raw if isinstance(raw, str) else str(raw)

    def genre_mask(self, genres: Sequence[str]) -> np.ndarray | None:
        """Items in any of ``genres`` (``None`` when no genre was asked).

        Raises:
            UnknownGenresError: a genre the catalogue does not have, or no genres at all.
        """
        if not genres:
            return None
        if self._genres is None:
            raise UnknownGenresError("this model's catalogue has no genres to filter by")
        G, names = self._genres
        idx = names.get_indexer(list(genres))
        if (idx < 0).any():
            unknown = [g for g, i in zip(genres, idx, strict=True) if i < 0]
            raise UnknownGenresError(
                f"unknown genre(s) {unknown}; known genres: {', '.join(map(str, names))}"
            )
        return np.asarray(G[:, idx].sum(axis=1)).ravel() > 0

    def in_genres(self, items: Sequence[Any], mask: np.ndarray) -> list[bool]:
        """Whether each item id (as the catalogue stores it) passes a :meth:`genre_mask`."""
        find = self._column_of.get
        return [bool(c >= 0 and mask[c]) for c in (find(i, -1) for i in items)]

    # -------------------------------------------------------------- answers
    def recommend(
        self,
        user_id: object,
        k: int,
        *,
        exclude: np.ndarray | None = None,
        genres: np.ndarray | None = None,
        recent: Sequence[Any] = (),
        demographics: dict[str, Any] | None = None,
        liked_genres: Sequence[str] = (),
    ) -> Answer:
        """Top-``k`` for one user (see the module docstring for who answers).

        Args:
            user_id: the id as the model stores it (after :meth:`user_id`).
            k: list length (capped at what is left to recommend).
            exclude: item columns never to return (:meth:`item_columns`).
            genres: a :meth:`genre_mask`; only items in it are returned.
            recent: item ids the user interacted with since the model was
                trained, oldest first; unknown ids are ignored and reported.
            demographics: ``age``/``gender``/``occupation`` of a new user.
            liked_genres: a new user's onboarding answer (genres they like).

        Raises:
            InputError: the request cannot be answered as asked.
        """
        ask = Ask(user_id, k, exclude, genres, tuple(recent), demographics, tuple(liked_genres))
        answer = self.recommend_many([ask])[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def recommend_many(self, asks: Sequence[Ask]) -> list[Answer | Exception]:
        """The answer to each of several requests, as :meth:`recommend` gives it alone.

        Requests the model answers the same way are scored in one call: known
        users from their training rows together, histories with recent items
        folded in together. A model's cost per user falls steeply with the
        batch (the demo's ranker: about 3.8 ms for one user, 0.8 ms each for eight),
        so a service answers requests that arrived together in one call.

        Returns:
            Per request, its :class:`Answer`, or the exception that request
            alone raised while it was planned (an :class:`InputError` for bad
            input); the others are answered all the same.
        """
        plans: list[_Plan | Exception] = []
        for ask in asks:
            try:
                plans.append(self._plan(ask))
            except Exception as exc:  # noqa: BLE001 - it fails its own request only
                plans.append(exc)
        ready = [p for p in plans if isinstance(p, _Plan)]
        by_row = [p for p in ready if p.scores is None and p.history is None]
        if by_row:
            rows = np.array([p.row for p in by_row], dtype=np.int64)
            for plan, scores in zip(by_row, self.model.score_users(rows, self.X), strict=True):
                plan.scores = scores
        by_history = [p for p in ready if p.scores is None]
        if by_history:
            H = sp.vstack([p.history for p in by_history], format="csr")
            for plan, scores in zip(by_history, self.model.score_histories(H), strict=True):
                plan.scores = scores
        return [
            plan if isinstance(plan, Exception) else self._finish(ask, plan)
            for ask, plan in zip(asks, plans, strict=True)
        ]

    def _plan(self, ask: Ask) -> _Plan:
        """Who answers ``ask`` and from what; cold-start answers are scored at once."""
        plan = _Plan(ignored=self.unknown_items(ask.recent))
        fresh = self.item_columns(ask.recent, "recent items", strict=False)
        row = self.user_row(ask.user_id)
        if row >= 0:
            self._known(plan, row, fresh)
        else:
            self._cold(plan, ask, fresh)
        return plan

    def _finish(self, ask: Ask, plan: _Plan) -> Answer:
        """The plan's scores with seen, excluded and out-of-genre items removed, ranked."""
        scores = np.array(plan.scores, dtype=np.float64, copy=True).reshape(1, -1)
        scores[0, plan.seen] = -np.inf
        if ask.exclude is not None and ask.exclude.size:
            scores[0, ask.exclude] = -np.inf
        if ask.genres is not None:
            scores[0, ~ask.genres] = -np.inf
        items, best = top_k(scores, min(int(ask.k), self.n_items))
        keep = items[0] >= 0
        return Answer(
            items=self._item_ids[items[0][keep]].tolist(),
            scores=best[0][keep].astype(float).tolist(),
            served_by=plan.served_by,
            folded_in=plan.folded,
            ignored=plan.ignored,
            fallback=plan.fallback,
        )

    def _known(self, plan: _Plan, row: int, fresh: np.ndarray) -> None:
        """A fitted user: their row, plus fresh items folded in where the model can."""
        start, end = self.X.indptr[row], self.X.indptr[row + 1]
        trained = self.X.indices[start:end]
        new = np.setdiff1d(fresh, trained) if fresh.size else fresh
        plan.seen = np.union1d(trained, new) if new.size else trained
        if new.size and self.model.folds_in:
            plan.history = self.X[row] + _one_hot(new, self.n_items)
            plan.folded = int(new.size)
            return
        plan.row = row
        plan.fallback = "no_fold_in" if new.size else None

    def _cold(self, plan: _Plan, ask: Ask, fresh: np.ndarray) -> None:
        """A user the model never saw: fold in their first items, else the chain."""
        fresh = np.unique(fresh)
        plan.seen = fresh
        if fresh.size and self.model.folds_in:
            plan.history = _one_hot(fresh, self.n_items)
            plan.folded = int(fresh.size)
            return
        chain = self.served.cold_start
        scores, paths = chain.score_users(
            _one_hot(fresh, self.n_items),
            [chain.demographics(ask.user_id, ask.demographics)],
            genre_scores=chain.genre_votes([list(ask.liked_genres)]),
        )
        plan.scores, plan.served_by = scores[0], paths[0]
        plan.fallback = "no_fold_in" if fresh.size else None

    def similar(self, item_col: int, k: int) -> Answer:
        """Items most like the item in column ``item_col``: co-liked (cosine over the
        training users) plus content similarity, the item itself left out."""
        chain = self.served.cold_start
        scores = _unit_max(chain.item_sim[item_col].toarray().ravel())
        if chain.content is not None:
            content = (chain.content[item_col] @ chain.content.T).toarray().ravel()
            scores = scores + CONTENT_WEIGHT * _unit_max(content)
        scores = np.where(scores > 0, scores, -np.inf).reshape(1, -1)
        scores[0, item_col] = -np.inf
        items, best = top_k(scores, min(int(k), self.n_items))
        keep = items[0] >= 0
        return Answer(
            items=self._item_ids[items[0][keep]].tolist(),
            scores=best[0][keep].astype(float).tolist(),
            served_by=SERVED_BY_SIMILARITY,
        )


def _one_hot(cols: np.ndarray, n_items: int) -> sp.csr_matrix:
    """One history row with weight 1 on ``cols``."""
    cols = np.asarray(cols, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(cols.size, dtype=np.float32), (np.zeros(cols.size, dtype=np.int64), cols)),
        shape=(1, n_items),
    )


def _unit_max(v: np.ndarray) -> np.ndarray:
    top = v.max() if v.size else 0.0
    return v / top if top > 0 else v
