"""Content-based recommender: items like the ones a user rated, by item text.

Each item is a TF-IDF vector of its title words, genre tokens and release-year
tokens (:func:`recsys.data.features.build_content_vectors`), L2-normalised, so the
dot product of two item vectors is their cosine similarity. A user's profile is
the rating-weighted sum of the vectors of the items they interacted with; an
item's score is ``profile · item``. An item that nobody has interacted with
yet still has a vector, so it can be recommended from day one.

Alignment with the matrix columns is explicit: column ``j`` of ``X`` is the item
``context.item_ids[j]`` when the caller passes the id map's item order
there, otherwise the ``j``-th smallest ``item_id`` of ``context.items``
(which is how :class:`recsys.ids.IdMap` orders a catalogue built with
``extra_items=items.item_id``). See :func:`align_items`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, TITLE_COL, YEAR_COL
from recsys.errors import InputError, check_k
from recsys.models.base import FitContext, Recommender, top_k

log = logging.getLogger(__name__)

RELATED_ITEM_COL = "related_item_id"
#: Columns of the related-items table.
RELATED_COLS = (ITEM_COL, RELATED_ITEM_COL, SCORE_COL, RANK_COL)
#: Items scored at once when building the related-items table.
_RELATED_BLOCK = 1024


class ContentAlignmentError(InputError):
    """The items table cannot be lined up with the matrix columns."""


def align_items(
    items: pd.DataFrame, n_items: int, item_ids: pd.Index | np.ndarray | None = None
) -> pd.DataFrame:
    """The items table reordered so that row ``j`` describes matrix column ``j``.

    Args:
        items: the items table (``item_id`` plus content columns); not mutated.
        n_items: number of matrix columns.
        item_ids: external id of each column (``IdMap.items``). Columns whose
            id the table lacks get an empty row (no content, never similar to
            anything). Without it, the table must hold exactly ``n_items``
            items and column ``j`` is the ``j``-th smallest id.

    Returns:
        A new frame with ``n_items`` rows and a fresh ``RangeIndex``.

    Raises:
        ContentAlignmentError: no ``item_id`` column, duplicate ids, or a
            length mismatch when ``item_ids`` is not given.
    """
    if ITEM_COL not in items.columns:
        raise ContentAlignmentError(f"items table has no {ITEM_COL!r} column")
    if items[ITEM_COL].duplicated().any():
        raise ContentAlignmentError("items table has duplicate item_id values")
    if item_ids is None:
        if len(items) != n_items:
            raise ContentAlignmentError(
                f"items table has {len(items)} items but X has {n_items} columns; pass the id "
                f"map's item order as context.item_ids"
            )
        return items.sort_values(ITEM_COL, kind="stable").reset_index(drop=True)
    ids = np.asarray(item_ids)
    if ids.size != n_items:
        raise ContentAlignmentError(f"item_ids has {ids.size} ids but X has {n_items} columns")
    aligned = items.set_index(ITEM_COL).reindex(pd.Index(ids, name=ITEM_COL))
    return aligned.reset_index()


def item_content_matrix(
    items: pd.DataFrame, *, max_features: int | None = 5000, year_tokens: bool = True
) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows (title, genres, year) in the row order of ``items``.

    Rows of items without any content (e.g. ids missing from the table) are zero.
    The year adds two tokens, the exact year and its decade (``y1995 d1990``).
    """
    from recsys.data.features import build_content_vectors

    docs = items.copy()
    titles = docs[TITLE_COL].fillna("").astype(str) if TITLE_COL in docs else ""
    if year_tokens and YEAR_COL in docs:
        year = pd.to_numeric(docs[YEAR_COL], errors="coerce")
        tokens = np.where(
            year.notna(),
            "y"
            + year.fillna(0).astype(int).astype(str)
            + " d"
            + (year.fillna(0) // 10 * 10).astype(int).astype(str),
            "",
        )
        titles = titles + " " + pd.Series(tokens, index=docs.index)
    docs[TITLE_COL] = titles
    docs[ITEM_COL] = np.arange(len(docs))  # ids may be missing (NaN) for empty rows
    matrix, _ = build_content_vectors(docs, max_features=max_features)
    return sp.csr_matrix(matrix, dtype=np.float32)


class ContentRecommender(Recommender):
    """Recommends items whose content resembles what the user rated.

    ``score(u, j) = Σ_i x_ui · cos(v_i, v_j)`` computed as ``(x_u V) Vᵀ``, with
    ``x_ui`` the interaction weight (the rating), optionally centred on the
    user's mean so that disliked items push similar ones down.

    Without an items table in ``context.items``, an item's only
    description is its column of ``X`` (who interacted with it); the model logs
    a warning and works as a plain item-item cosine model, and
    ``content_source_`` says ``"interactions"``.

    Args:
        max_features: TF-IDF vocabulary size.
        year_tokens: add release year and decade tokens to each item.
        centered: subtract each user's mean weight before building the profile.

    Attributes:
        item_vectors_: CSR ``(n_items, n_terms)``, rows L2-normalised (or zero).
        item_ids_: external id of each column when known, else ``None``.
        content_source_: ``"items"`` or ``"interactions"``.
    """

    name = "content"
    #: Scores read only the user's history row, so any row scores.
    folds_in: ClassVar[bool] = True

    def __init__(
        self, max_features: int | None = 5000, year_tokens: bool = True, centered: bool = False
    ) -> None:
        self.max_features = max_features
        self.year_tokens = year_tokens
        self.centered = centered

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        items = context.items
        ids = context.item_ids
        if items is None:
            log.warning(
                "content: no items table in context.items; "
                "describing items by their interactions instead"
            )
            self.item_vectors_ = _normalise_rows(X.T.tocsr())
            self.content_source_ = "interactions"
            self.item_ids_ = None if ids is None else np.asarray(ids)
            return
        aligned = align_items(items, X.shape[1], ids)
        self.item_vectors_ = item_content_matrix(
            aligned, max_features=self.max_features, year_tokens=self.year_tokens
        )
        self.content_source_ = "items"
        self.item_ids_ = aligned[ITEM_COL].to_numpy()
        log.debug("content: %d items × %d terms", *self.item_vectors_.shape)

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return self.score_profiles(self._weights(X[users]))

    def score_profiles(self, weights: sp.spmatrix) -> np.ndarray:
        """Dense scores of every item for rows of item weights (``(n, n_items)``).

        Used for onboarding: a new user's liked items as a one-row weight matrix.
        """
        self._check_fitted()
        profile = (sp.csr_matrix(weights, dtype=np.float32) @ self.item_vectors_).toarray()
        return np.asarray((self.item_vectors_ @ profile.T).T, dtype=np.float32)

    def _weights(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.centered or rows.nnz == 0:
            return rows
        counts = np.maximum(np.diff(rows.indptr), 1)
        means = np.asarray(rows.sum(axis=1)).ravel() / counts
        out = rows.copy()
        out.data = out.data - np.repeat(means, np.diff(rows.indptr)).astype(np.float32)
        return out

    def related_items(self, k: int = 10) -> pd.DataFrame:
        """Each item's ``k`` most similar other items by content.

        Returns:
            Columns ``item_id, related_item_id, score, rank`` (cosine, rank 1 =
            most similar), sorted by item then rank. Ids are external ids when
            known (``item_ids_``), else column indices. Pairs with similarity 0
            are left out, so an item without content has no rows.
        """
        self._check_fitted()
        k = check_k(k)
        V = self.item_vectors_
        n = V.shape[0]
        k = min(int(k), n - 1)
        parts = (
            [
                self._related_block(np.arange(s, min(s + _RELATED_BLOCK, n)), k)
                for s in range(0, n, _RELATED_BLOCK)
            ]
            if k > 0
            else []
        )
        if not parts:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in zip(
                        RELATED_COLS, (np.int64, np.int64, np.float64, np.int64), strict=True
                    )
                }
            )
        src, dst, score, rank = (np.concatenate(p) for p in zip(*parts, strict=True))
        ids = self.item_ids_ if self.item_ids_ is not None else np.arange(n)
        return pd.DataFrame(
            {
                ITEM_COL: ids[src],
                RELATED_ITEM_COL: ids[dst],
                SCORE_COL: score.astype(np.float64),
                RANK_COL: rank,
            }
        )

    def _related_block(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        sim = np.asarray((self.item_vectors_[rows] @ self.item_vectors_.T).todense())
        sim[np.arange(rows.size), rows] = -np.inf
        sim[sim <= 0] = -np.inf
        best, scores = top_k(sim, k)
        keep = best >= 0
        ranks = np.broadcast_to(np.arange(1, k + 1), best.shape)
        return np.repeat(rows, k)[keep.ravel()], best[keep], scores[keep], ranks[keep]


def _normalise_rows(M: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    M = sp.csr_matrix(M, dtype=np.float32)
    norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ M)


def write_related_items(model: ContentRecommender, out_path: str | Path, k: int = 10) -> Path:
    """Write ``model.related_items(k)`` to the Parquet file ``out_path`` (overwriting).

    The pipeline calls this next to the batch recommendations, e.g.
    ``write_related_items(model, run / "related_items.parquet")``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    table = model.related_items(k)
    table.to_parquet(out_path, index=False)
    log.info("wrote %d related-item rows to %s", len(table), out_path)
    return out_path
