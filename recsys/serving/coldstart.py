"""Cold start: answers for users without history and items without interactions.

A user the models do not know goes down a fallback chain (first match serves):

1. ``onboarding``: the user named a few liked items and/or genres. Liked
   items vote for items co-liked with them by other users (item-item cosine
   on the training interactions) and for items with similar content (TF-IDF
   cosine, so a brand-new liked item still works); liked genres vote for the
   most popular items of those genres. Segment (or global) popularity breaks
   ties and fills the list.
2. ``segment``: the user's demographics are known (from the users table or
   passed in): the most popular items among training users of the same age
   band × gender, else of the same occupation, when that segment has at
   least ``min_segment_users`` users; blended with global popularity.
3. ``global``: the most popular items overall.

Every answer carries ``served_by`` (``onboarding``, ``segment:<name>`` or
``global``). A new item (in the items table, without interactions) is reached
through content similarity in the onboarding path and through
:meth:`ColdStart.similar_items`.

How the chain does for users with a few items is measured by
:mod:`recsys.evaluation.cold_users`.
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
    OCCUPATION_COL,
    RANK_COL,
    SCORE_COL,
    SERVED_BY_COL,
    USER_COL,
)
from recsys.errors import InputError, check_k
from recsys.ids import IdMap, long_frame
from recsys.models.base import top_k

log = logging.getLogger(__name__)

#: Optional onboarding columns of a cold user's request (see :meth:`ColdStart.recommend_many`).
LIKED_ITEMS_COL = "liked_items"
LIKED_GENRES_COL = "liked_genres"
ONBOARDING_COLS = (LIKED_ITEMS_COL, LIKED_GENRES_COL, AGE_COL, GENDER_COL, OCCUPATION_COL)
#: Age band edges (a band is [edge_i, edge_i+1)).
AGE_BANDS = (0, 18, 25, 35, 45, 56, 200)
SEGMENT_AGE_GENDER = "age_gender"
SEGMENT_OCCUPATION = "occupation"


class ColdStartError(InputError):
    """Input to the cold-start chain is malformed."""


@dataclass
class ColdStart:
    """Fitted cold-start chain; build it with :func:`fit_cold_start`.

    Attributes:
        item_ids: external id of each column.
        global_pop: interactions per item (training), shape ``(n_items,)``.
        segment_pop: per segment kind, segment key → popularity vector.
        user_segments: per segment kind, user id → segment key.
        item_sim: item-item cosine on the training interactions (CSR).
        content: L2-normalised content rows (CSR) or ``None``.
        item_genres: items × genres one-hot (CSR) and the genre names, or ``None``.
    """

    item_ids: pd.Index
    global_pop: np.ndarray
    segment_pop: dict[str, dict[str, np.ndarray]]
    user_segments: dict[str, dict]
    item_sim: sp.csr_matrix
    content: sp.csr_matrix | None
    item_genres: tuple[sp.csr_matrix, pd.Index] | None
    min_segment_users: int = 20
    segment_weight: float = 0.5
    onboarding_weight: float = 1.0

    def recommend(
        self,
        k: int = 10,
        *,
        user_id: object = None,
        demographics: dict | None = None,
        liked_items: list | None = None,
        liked_genres: list | None = None,
        exclude: list | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` items for one cold user and the path that served them.

        Args:
            k: list length.
            user_id: look up the user's demographics in the fitted users table.
            demographics: ``age``/``gender``/``occupation`` given directly
                (overrides the table).
            liked_items: item ids the user said they like (onboarding).
            liked_genres: genre names the user said they like (onboarding).
            exclude: item ids never to return (e.g. already seen).

        Returns:
            Columns ``item_id, score, rank, served_by``; fewer than ``k`` rows
            only when the catalogue is smaller.
        """
        k = check_k(k)
        liked = self._columns(liked_items or [], strict=True)
        if liked.size < len(liked_items or []):
            log.warning(
                "onboarding: %d liked item(s) unknown, ignored", len(liked_items or []) - liked.size
            )
        history = sp.csr_matrix(
            (np.ones(liked.size), (np.zeros(liked.size, int), liked)), shape=(1, self.item_ids.size)
        )
        demo = self._demographics(user_id, demographics)
        scores, paths = self.score_users(
            history, [demo], genre_scores=self._genre_scores(liked_genres or [])
        )
        scores[0, self._columns(exclude or [], strict=True)] = -np.inf
        items, best = top_k(scores, int(k))
        keep = items[0] >= 0
        return pd.DataFrame(
            {
                ITEM_COL: self.item_ids.to_numpy()[items[0][keep]],
                SCORE_COL: best[0][keep],
                RANK_COL: np.arange(1, int(keep.sum()) + 1),
                SERVED_BY_COL: paths[0],
            }
        )

    def score_users(
        self,
        history: sp.spmatrix,
        demographics: list[dict],
        *,
        genre_scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Dense chain scores for several cold users at once.

        Args:
            history: ``(n_users, n_items)``; nonzero = an item the user liked or
                already has (those are scored ``-inf``). An empty row means no
                onboarding answer.
            demographics: per user, a dict of ``age``/``gender``/``occupation``
                or of segment keys (``age_gender``/``occupation``), may be empty.
            genre_scores: optional genre votes: ``(n_items,)`` added to every
                row (every user counts as onboarded), or ``(n_users, n_items)``
                per user (a user with an all-zero row did not answer).

        Returns:
            ``(scores, served_by)``: ``(n_users, n_items)`` float64 and, per
            user, the path that served it.
        """
        H = sp.csr_matrix(history, dtype=np.float64)
        if H.shape != (len(demographics), self.item_ids.size):
            raise ColdStartError(
                f"history has shape {H.shape}; expected ({len(demographics)}, {self.item_ids.size})"
            )
        base, base_paths = self._base_matrix(demographics)
        onboard: float | np.ndarray = 0.0  # nobody named an item (a test set's cold users)
        if H.nnz:
            onboard = _unit_max_rows(np.asarray(_product(H, self.item_sim).todense()))
            if self.content is not None:
                onboard += 0.3 * _unit_max_rows(
                    np.asarray(((H @ self.content) @ self.content.T).todense())
                )
        has = np.diff(H.indptr) > 0
        if genre_scores is not None:
            votes = np.asarray(genre_scores, dtype=np.float64)
            onboard += votes if votes.ndim == 2 else votes[None, :]
            has |= (votes != 0).any(axis=1) if votes.ndim == 2 else True
        scores = np.where(has[:, None], self.onboarding_weight * onboard + base, base)
        scores[H.nonzero()] = -np.inf
        paths = [("onboarding" if h else p) for h, p in zip(has, base_paths, strict=True)]
        return scores, paths

    def recommend_many(self, requests: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """Top-``k`` lists for several cold users at once, one per row of ``requests``.

        Args:
            requests: ``user_id`` (distinct) and optionally the onboarding
                answer of each user: ``liked_items`` (a list of item ids or one
                ``|``-separated string), ``liked_genres`` (likewise), ``age``,
                ``gender``, ``occupation``. Missing columns and null cells mean
                "not answered"; demographics given here override the users
                table's. Unknown liked items or genres are ignored (logged).

        Returns:
            Columns ``user_id, item_id, score, rank, served_by`` (float
            scores), users in input order, ranks 1..k.

        Raises:
            ColdStartError: no ``user_id`` column, repeated ids or a bad ``k``.
        """
        if USER_COL not in requests.columns:
            raise ColdStartError(f"requests have no {USER_COL!r} column")
        if requests[USER_COL].duplicated().any():
            raise ColdStartError("requests repeat a user_id; pass each cold user once")
        k = min(check_k(k), self.item_ids.size)
        ids = requests[USER_COL].to_numpy()
        liked = _coerce_item_ids(_answer_lists(requests, LIKED_ITEMS_COL), self.item_ids)
        genres = _answer_lists(requests, LIKED_GENRES_COL)
        demos = [
            self._demographics(u, d)
            for u, d in zip(ids, _answer_demographics(requests), strict=True)
        ]
        # Users in blocks: the chain's scores are dense users x items (float64), and
        # every test user a large data set has not seen at once would not fit.
        block = max(1, SCORE_BLOCK_CELLS // max(self.item_ids.size, 1))
        items, best, paths = [], [], []
        for start in range(0, max(ids.size, 1), block):
            part = slice(start, start + block)
            scores, part_paths = self.score_users(
                self._liked_matrix(liked[part]),
                demos[part],
                genre_scores=self._genre_matrix(genres[part]),
            )
            part_items, part_best = top_k(scores, k)
            items.append(part_items)
            best.append(part_best)
            paths += part_paths
        return long_frame(ids, np.vstack(items), np.vstack(best), self.item_ids, served_by=paths)

    def _liked_matrix(self, lists: list[list]) -> sp.csr_matrix:
        """``(n_users, n_items)`` 1 per known liked item; unknown ids are logged and ignored."""
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        flat = [i for x in lists for i in x]
        cols = self.item_ids.get_indexer(pd.Index(flat)) if flat else np.empty(0, dtype=np.int64)
        if (cols < 0).any():
            log.warning(
                "onboarding: unknown liked item id(s) ignored: %s",
                pd.unique(np.asarray(flat, dtype=object)[cols < 0]).tolist(),
            )
        rows = np.repeat(np.arange(len(lists)), lengths)
        ok = cols >= 0
        H = sp.csr_matrix(
            (np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(len(lists), self.item_ids.size)
        )
        H.data[:] = 1.0
        return H

    def _genre_matrix(self, lists: list[list]) -> np.ndarray | None:
        """Per user, popularity of the items in any liked genre (0 elsewhere), or ``None``."""
        if self.item_genres is None or not any(lists):
            return None
        G, names = self.item_genres
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        idx = names.get_indexer(pd.Index([str(g) for x in lists for g in x]))
        if (idx < 0).any():
            log.warning("onboarding: unknown genre(s) ignored")
        rows = np.repeat(np.arange(len(lists)), lengths)
        U = sp.csr_matrix(
            (np.ones(int((idx >= 0).sum())), (rows[idx >= 0], idx[idx >= 0])),
            shape=(len(lists), names.size),
        )
        hit = np.asarray((U @ G.T).todense()) > 0
        return hit * unit_max(self.global_pop)[None, :]

    def _base_matrix(self, demographics: list[dict]) -> tuple[np.ndarray, list[str]]:
        """Per user, segment-blended (or global) popularity and its path name.

        Each segment's blend is made once and copied to its users' rows (one
        dict lookup per cold user): 0.05 s for the 2,169 cold test users of a
        2M-interaction run (20,000 items), where blending row by row took 0.44 s.
        """
        glob = unit_max(self.global_pop)
        table, row_of = [glob], {}
        index = np.zeros(len(demographics), dtype=np.int64)
        paths = []
        for n, demo in enumerate(demographics):
            pop, path = self._segment_pop(demo)
            paths.append(path)
            if pop is None:
                continue
            if id(pop) not in row_of:
                row_of[id(pop)] = len(table)
                table.append((1 - self.segment_weight) * glob + self.segment_weight * unit_max(pop))
            index[n] = row_of[id(pop)]
        return np.vstack(table)[index], paths

    def _segment_pop(self, demo: dict) -> tuple[np.ndarray | None, str]:
        for kind, key in _segment_keys(demo):
            pop = self.segment_pop.get(kind, {}).get(key)
            if pop is not None:
                return pop, f"segment:{kind}"
        return None, "global"

    def demographics(self, user_id: object, given: dict | None = None) -> dict:
        """One user's segment keys: the users table's, overridden by ``given``
        (``age``/``gender``/``occupation`` of a request)."""
        return self._demographics(user_id, given)

    def genre_votes(self, lists: list[list]) -> np.ndarray | None:
        """Per user, the genre votes of their liked genres (``score_users``'s
        ``genre_scores``), or ``None`` when nobody named a known genre."""
        return self._genre_matrix(lists)

    def demographics_of(self, user_ids: list) -> list[dict]:
        """Segment keys of fitted users (empty dicts for users the table lacks)."""
        return [
            {kind: seg[u] for kind, seg in self.user_segments.items() if seg.get(u) is not None}
            for u in user_ids
        ]

    def similar_items(self, item_id: object, k: int = 10) -> pd.DataFrame:
        """Items most like ``item_id`` by content (works for items nobody has seen).

        Returns:
            Columns ``item_id, score, rank`` (cosine), the item itself excluded.

        Raises:
            ColdStartError: unknown item or no content table was fitted.
        """
        if self.content is None:
            raise ColdStartError(
                "no items table was given to fit_cold_start; content similarity is unavailable"
            )
        col = self._columns([item_id], strict=True)
        sims = np.asarray((self.content[col] @ self.content.T).todense()).astype(np.float64)
        sims[0, col] = -np.inf
        items, best = top_k(sims, int(k))
        keep = items[0] >= 0
        return pd.DataFrame(
            {
                ITEM_COL: self.item_ids.to_numpy()[items[0][keep]],
                SCORE_COL: best[0][keep],
                RANK_COL: np.arange(1, int(keep.sum()) + 1),
            }
        )

    # ------------------------------------------------------------- internals
    def _columns(self, ids: list, *, strict: bool) -> np.ndarray:
        if len(ids) == 0:
            return np.empty(0, dtype=np.int64)
        cols = self.item_ids.get_indexer(pd.Index(np.asarray(ids)))
        if strict and (cols < 0).any():
            raise ColdStartError(f"unknown item id(s) {np.asarray(ids)[cols < 0].tolist()}")
        return cols[cols >= 0]

    def _demographics(self, user_id: object, demographics: dict | None) -> dict:
        out = self.demographics_of([user_id])[0] if user_id is not None else {}
        if demographics:
            out.update({kind: key for kind, key in _segment_keys(demographics)})
        return out

    def _genre_scores(self, liked_genres: list) -> np.ndarray | None:
        if not liked_genres or self.item_genres is None:
            return None
        G, names = self.item_genres
        idx = names.get_indexer(pd.Index(liked_genres))
        if (idx < 0).all():
            log.warning("onboarding: none of the genres %s is known", liked_genres)
            return None
        has = np.asarray(G[:, idx[idx >= 0]].sum(axis=1)).ravel() > 0
        return has * unit_max(self.global_pop)


def _answer_lists(requests: pd.DataFrame, column: str) -> list[list]:
    """Per row, the answer in ``column`` as a list: lists pass, strings split on ``|``."""
    if column not in requests.columns:
        return [[] for _ in range(len(requests))]
    return [_as_list(v) for v in requests[column].tolist()]


def _as_list(value: object) -> list:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [v for v in list(value) if not (isinstance(v, float) and np.isnan(v))]
    return [value]


def _answer_demographics(requests: pd.DataFrame) -> list[dict]:
    """Per row, the non-null ``age``/``gender``/``occupation`` answers."""
    cols = [c for c in (AGE_COL, GENDER_COL, OCCUPATION_COL) if c in requests.columns]
    records = requests[cols].to_dict("records") if cols else [{}] * len(requests)
    return [{c: v for c, v in r.items() if v is not None and not pd.isna(v)} for r in records]


def _coerce_item_ids(lists: list[list], item_ids: pd.Index) -> list[list]:
    """Liked item ids given as strings (from a ``|`` string) in the catalogue's id type."""
    if item_ids.dtype.kind not in "iu":
        return lists
    return [
        [int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v for v in x] for x in lists
    ]


def _product(H: sp.csr_matrix, S: sp.csr_matrix) -> sp.csr_matrix:
    """``H @ S`` in ``H``'s dtype, casting only the rows of ``S`` that ``H`` uses.

    ``S`` (the item-item similarities, float32) is large; ``H @ S`` with a
    float64 ``H`` cast all of it on every call: 11 ms for one onboarding
    request at 20,000 items (300 neighbours each), against 0.1 ms here. The
    sums are the same, term for term and in the same order.
    """
    used = np.unique(H.indices)
    return H[:, used] @ S[used].astype(H.dtype)


def _unit_max_rows(M: np.ndarray) -> np.ndarray:
    top = M.max(axis=1, keepdims=True) if M.shape[1] else np.zeros((M.shape[0], 1))
    return np.divide(M, top, out=np.zeros_like(M, dtype=np.float64), where=top > 0)


def unit_max(v: np.ndarray) -> np.ndarray:
    """``v`` scaled so its largest entry is 1 (unchanged when it has no positive entry)."""
    v = np.asarray(v, dtype=np.float64)
    top = v.max() if v.size else 0.0
    return v / top if top > 0 else v


def age_band(age: float) -> str:
    """The band of an age, e.g. ``"25-34"`` (bands from :data:`AGE_BANDS`)."""
    i = int(np.searchsorted(AGE_BANDS, float(age), side="right")) - 1
    i = min(max(i, 0), len(AGE_BANDS) - 2)
    return f"{AGE_BANDS[i]}-{AGE_BANDS[i + 1] - 1}"


def _segment_keys(demo: dict) -> list[tuple[str, str]]:
    """Segments of a demographics dict, most specific first."""
    keys = []
    if demo.get(SEGMENT_AGE_GENDER) is not None:
        keys.append((SEGMENT_AGE_GENDER, demo[SEGMENT_AGE_GENDER]))
    elif (
        demo.get(AGE_COL) is not None
        and demo.get(GENDER_COL) is not None
        and not pd.isna(demo[AGE_COL])
    ):
        keys.append((SEGMENT_AGE_GENDER, f"{age_band(demo[AGE_COL])}|{demo[GENDER_COL]}"))
    occ = demo.get(SEGMENT_OCCUPATION, demo.get(OCCUPATION_COL))
    if occ is not None and not (isinstance(occ, float) and np.isnan(occ)):
        keys.append((SEGMENT_OCCUPATION, str(occ)))
    return keys


def user_segment_table(users: pd.DataFrame) -> pd.DataFrame:
    """Each user's segment keys: ``user_id``, ``age_gender``, ``occupation`` (null if unknown)."""
    if USER_COL not in users.columns:
        raise ColdStartError(f"users table has no {USER_COL!r} column")
    out = pd.DataFrame({USER_COL: users[USER_COL].to_numpy()})
    if AGE_COL in users.columns and GENDER_COL in users.columns:
        age = pd.to_numeric(users[AGE_COL], errors="coerce").to_numpy(dtype=np.float64)
        band_idx = np.clip(np.searchsorted(AGE_BANDS, age, side="right") - 1, 0, len(AGE_BANDS) - 2)
        labels = np.array(
            [f"{a}-{b - 1}" for a, b in zip(AGE_BANDS[:-1], AGE_BANDS[1:], strict=True)]
        )
        key = pd.Series(labels[band_idx]) + "|" + users[GENDER_COL].astype(str).to_numpy()
        ok = ~np.isnan(age) & users[GENDER_COL].notna().to_numpy()
        out[SEGMENT_AGE_GENDER] = key.where(ok, None).to_numpy()
    if OCCUPATION_COL in users.columns:
        out[SEGMENT_OCCUPATION] = users[OCCUPATION_COL].astype(object).to_numpy()
    return out


def fit_cold_start(
    train: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    id_map: IdMap | None = None,
    min_segment_users: int = 20,
    segment_weight: float = 0.5,
    onboarding_weight: float = 1.0,
    similarity_pairs: int | None = None,
) -> ColdStart:
    """Learn the fallback chain from the training interactions.

    Args:
        train: training interactions (``user_id``, ``item_id``).
        items: optional items table: content similarity and genres (its items
            without interactions become recommendable through content).
        users: optional users table (``age``, ``gender``, ``occupation``).
        id_map: the column order to use; default all items of ``train`` and ``items``.
        min_segment_users: smaller segments fall back to the next path.
        segment_weight: share of segment popularity (vs global) in the segment path.
        onboarding_weight: weight of the onboarding votes (each scaled to max 1)
            added to the segment/global popularity. The defaults (20, 0.5, 1.0)
            were picked on a cold slice of a validation carve of the ML-100K
            ``msr`` training split (never its test part).
        similarity_pairs: learn the co-liked item similarity from the users of
            :func:`similarity_sample` for about this many (user, item) pairs
            when ``train`` has more (``None``: from every user). Popularity and
            segments always count every pair.

    Raises:
        ColdStartError: missing columns or empty ``train``.
    """
    for col in (USER_COL, ITEM_COL):
        if col not in train.columns:
            raise ColdStartError(f"train has no {col!r} column")
    if train.empty:
        raise ColdStartError("train has no rows; cold start needs popularity to fall back on")
    if id_map is None:
        id_map = IdMap.from_frame(train, extra_items=None if items is None else items[ITEM_COL])
    X = id_map.to_matrix(train, weight_col=None)
    X.data[:] = 1.0
    lookup, seg_pop = _segments(users, id_map, X, min_segment_users)
    similar = X
    keep = similarity_sample(id_map.users, X.nnz, similarity_pairs)
    if keep is not None:
        similar = X[np.flatnonzero(keep)]
    return cold_start_from_counts(
        id_map,
        np.asarray(X.sum(axis=0)).ravel(),
        lookup,
        seg_pop,
        similar,
        items,
        min_segment_users=min_segment_users,
        segment_weight=segment_weight,
        onboarding_weight=onboarding_weight,
    )


def cold_start_from_counts(
    id_map: IdMap,
    global_pop: np.ndarray,
    user_segments: dict[str, dict],
    segment_pop: dict[str, dict[str, np.ndarray]],
    similar: sp.csr_matrix,
    items: pd.DataFrame | None,
    **options: object,
) -> ColdStart:
    """The chain from what :func:`fit_cold_start` counts, wherever it was counted (the
    Spark engine counts on its cluster): each item's pairs, the segments'
    (:func:`segment_lookup`, per kind segment -> pairs per item) and the binary
    rows the co-liked similarity learns from (any users, ``id_map``'s columns)."""
    return ColdStart(
        item_ids=id_map.items,
        global_pop=global_pop,
        segment_pop=segment_pop,
        user_segments=user_segments,
        item_sim=_item_cosine(similar),
        content=_content(items, id_map),
        item_genres=_genres(items, id_map),
        **options,  # type: ignore[arg-type]
    )


#: Hex digits of a user id's SHA-256 that :func:`similarity_sample` compares.
_SAMPLE_DIGITS = 15


def similarity_threshold(pairs: int, max_pairs: int | None) -> int | None:
    """The cut of :func:`similarity_sample` for ``pairs`` training pairs: a user is in
    the sample when the first 15 hex digits of the SHA-256 of ``str(user_id)``, as
    a number, are below it (``None``: everyone is, as ``pairs <= max_pairs``).
    The rule depends on the ids alone, so both engines draw the same users."""
    if max_pairs is None or pairs <= max_pairs:
        return None
    return int(16**_SAMPLE_DIGITS * max_pairs / pairs)


def similarity_sample(user_ids: pd.Index, pairs: int, max_pairs: int | None) -> np.ndarray | None:
    """Which of ``user_ids`` the co-liked similarity learns from (a boolean mask), or
    ``None`` for all of them (see :func:`similarity_threshold`)."""
    import hashlib

    cut = similarity_threshold(pairs, max_pairs)
    if cut is None:
        return None
    digits = _SAMPLE_DIGITS
    return np.fromiter(
        (int(hashlib.sha256(str(u).encode()).hexdigest()[:digits], 16) < cut for u in user_ids),
        dtype=bool,
        count=len(user_ids),
    )


def fit_cold_start_from_matrix(X: sp.spmatrix, id_map: IdMap, **options: object) -> ColdStart:
    """The chain from a training matrix alone (no items or users table).

    Serves onboarding answers (co-liked items) and global popularity; the
    segment path and content similarity need :func:`fit_cold_start` with the tables.
    """
    X = sp.csr_matrix(X)
    rows, cols = X.nonzero()
    train = pd.DataFrame(
        {USER_COL: id_map.users.to_numpy()[rows], ITEM_COL: id_map.items.to_numpy()[cols]}
    )
    return fit_cold_start(train, id_map=id_map, **options)


def segment_lookup(users: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[str, dict]]:
    """The users table's segment keys (:func:`user_segment_table`) and, per segment
    kind, user id -> key: the chain's ``user_segments``."""
    if users is None:
        return None, {}
    table = user_segment_table(users)
    kinds = [k for k in (SEGMENT_AGE_GENDER, SEGMENT_OCCUPATION) if k in table.columns]
    return table, {k: dict(zip(table[USER_COL], table[k], strict=True)) for k in kinds}


def _segments(
    users: pd.DataFrame | None, id_map: IdMap, X: sp.csr_matrix, min_users: int
) -> tuple[dict, dict]:
    table, lookup = segment_lookup(users)
    if table is None:
        return {}, {}
    pops = {}
    rows = id_map.user_index(table[USER_COL].to_numpy())
    for kind in lookup:
        keys = table[kind]
        known = (rows >= 0) & keys.notna().to_numpy()
        codes, names = pd.factorize(keys[known])
        M = sp.csr_matrix(
            (np.ones(codes.size), (codes, rows[known])), shape=(names.size, id_map.n_users)
        )
        counts = np.bincount(codes, minlength=names.size)
        pop = np.asarray((M @ X).todense())
        pops[kind] = {str(n): pop[i] for i, n in enumerate(names) if counts[i] >= min_users}
    return lookup, pops


#: Dense cells of chain scores held at once by :meth:`ColdStart.recommend_many`.
SCORE_BLOCK_CELLS = 1 << 24

#: Co-liked neighbours each item keeps for onboarding answers (the whole item-item
#: cosine matrix of a large catalogue would not fit in memory).
ITEM_NEIGHBOURS = 300


def _item_cosine(X: sp.csr_matrix) -> sp.csr_matrix:
    """Item-item cosine of the training interactions, each item's top neighbours only."""
    from recsys.models.itemknn import ItemKNNRecommender

    return ItemKNNRecommender(k_neighbours=ITEM_NEIGHBOURS).fit(X).similarity_


def _content(items: pd.DataFrame | None, id_map: IdMap) -> sp.csr_matrix | None:
    if items is None:
        return None
    from recsys.models.content import align_items, item_content_matrix

    return item_content_matrix(align_items(items, id_map.n_items, id_map.items))


def _genres(items: pd.DataFrame | None, id_map: IdMap) -> tuple[sp.csr_matrix, pd.Index] | None:
    if items is None or GENRES_COL not in items.columns:
        return None
    from recsys.models.content import align_items

    aligned = align_items(items, id_map.n_items, id_map.items)
    lists = aligned[GENRES_COL].fillna("").astype(str).str.split("|").explode()
    lists = lists[lists.str.len() > 0]
    names = pd.Index(sorted(lists.unique()))
    G = sp.csr_matrix(
        (np.ones(len(lists)), (lists.index.to_numpy(), names.get_indexer(lists.to_numpy()))),
        shape=(id_map.n_items, names.size),
    )
    return G, names
