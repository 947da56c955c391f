"""The one model contract every recommender in recsys satisfies.

Conventions follow scikit-learn: ``__init__`` only stores hyper-parameters,
``fit`` returns ``self``, learned attributes end in ``_``, randomness comes
from ``random_state``. Models see only a CSR matrix ``X`` of users × items
(and, for models that want them, time-ordered sequences and side features);
the caller owns the id ↔ index maps (:mod:`recsys.ids`).

A subclass implements :meth:`_fit` and :meth:`_score`; the base class does
input checks, seen-item filtering and vectorised top-K in user batches.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InputError, StateError, check_k
from recsys.ids import IdMap
from recsys.progress import Ticker

log = logging.getLogger(__name__)


class _FromRows:
    """A :class:`FitContext` field that, when not given, is derived from the training
    rows the context was built from, on its first read.

    Sequences and latest-time matrices cost about a second at 2M interactions and
    only the sequential models and the ranker read them, so the rest never pay.
    """

    def __init__(self, derive: str) -> None:
        self.derive = derive  # the IdMap method that derives the field from the rows

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass's default
        if self.slot not in obj.__dict__:
            rows = obj.__dict__.get("rows")
            train, id_map = rows if rows is not None else (None, None)
            obj.__dict__[self.slot] = None if train is None else getattr(id_map, self.derive)(train)
        return obj.__dict__[self.slot]

    def __set__(self, obj: Any, value: Any) -> None:
        if value is None:
            obj.__dict__.pop(self.slot, None)  # derive it when read, if there are rows
        else:
            obj.__dict__[self.slot] = value


@dataclass
class FitContext:
    """Side information a model may use in ``fit``, beside the matrix ``X``.

    Every field is optional; a model that needs one says so in its docstring
    and copes (or raises :class:`recsys.errors.InputError`) when it is absent.
    Build it with :meth:`from_interactions`, which fills the fields that follow
    from the training rows themselves.

    Attributes:
        sequences: per user row, the item indices in time order (oldest first).
        item_features: a frame indexed by item column index (0..n_items-1).
        user_features: a frame indexed by user row index (0..n_users-1).
        items: the items table (``item_id``, optional ``title``, ``genres``,
            ``year``), one row per catalogue item, in any order.
        users: the users table (``user_id``, optional demographics).
        item_ids: the external id of each matrix column (``item_ids[j]`` is
            column ``j``); models that read ``items`` align it with these.
        timestamps: users × items CSR of each pair's latest time (seconds),
            or ``None`` when the data has no time.
        rows: the training rows and id map the context was built from; a
            ``sequences`` or ``timestamps`` not given is derived from them when
            first read.
        fitted: models of the same run already fitted on this ``X`` and context,
            registry name → a loader called only when the model is wanted. A
            model built from others (the ranker) may take one instead of fitting
            its own, when it has the same class and parameters.
    """

    sequences: list[np.ndarray] | None = _FromRows("sequences")  # type: ignore[assignment]
    item_features: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    item_ids: pd.Index | None = None
    timestamps: sp.csr_matrix | None = _FromRows("time_matrix")  # type: ignore[assignment]
    rows: tuple[pd.DataFrame, IdMap] | None = field(default=None, repr=False, compare=False)
    fitted: Mapping[str, Callable[[], Recommender]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_interactions(
        cls,
        train: pd.DataFrame,
        id_map: IdMap,
        *,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> FitContext:
        """The context of ``train`` under ``id_map``: item ids, sequences and
        timestamps from the rows (the last two when first read), plus the side
        tables as given."""
        return cls(items=items, users=users, item_ids=id_map.items, rows=(train, id_map))


class Recommender(ABC):
    """Base class: fit on a user × item matrix, recommend top-K item indices."""

    #: Registry name (``popularity``, ``itemknn``, ...).
    name: ClassVar[str] = ""
    #: True when the model reads ``context.sequences`` as time order and
    #: predicts what comes next (it then gains from time-ordered protocols).
    sequential: ClassVar[bool] = False
    #: Hyper-parameters tuning may search, name → ``("int", low, high, log)``,
    #: ``("float", low, high, log)`` or ``("choice", values)``
    #: (:func:`recsys.training.tuning.suggest`); empty = not tuned.
    search_space: ClassVar[dict[str, Any]] = {}
    #: True when the model scores any history row, also one it was never fitted
    #: on (:meth:`score_histories`): a new user's first clicks, or a known
    #: user's history plus what they did a minute ago, without retraining.
    folds_in: ClassVar[bool] = False
    #: Whether :meth:`recommend` may score several batches of users at once, in
    #: threads (the model's scoring must then be thread-safe).
    threaded_scoring: ClassVar[bool] = True

    # ------------------------------------------------------------------ contract
    def fit(self, X: sp.spmatrix, context: FitContext | None = None) -> Self:
        """Learn from ``X`` (users × items, non-negative weights). Returns ``self``."""
        X = check_matrix(X)
        self.n_users_, self.n_items_ = X.shape
        self._fit(X, context or FitContext())
        return self

    def recommend(
        self,
        users: np.ndarray | int,
        X: sp.spmatrix,
        k: int = 10,
        *,
        filter_seen: bool = True,
        batch_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for the given user rows.

        Args:
            users: user row indices (into ``X``).
            X: the interactions to condition on and, with ``filter_seen``, to
                exclude; usually the training matrix.
            k: list length; capped at the number of items.
            filter_seen: drop items the user has in ``X``.
            batch_size: users scored at once (memory is ``batch_size × n_items``).

        Returns:
            ``(items, scores)``, both ``(len(users), k)``, best first. Slots
            that cannot be filled (a user has seen nearly everything) hold item
            ``-1`` and score ``-inf``.
        """
        self._check_fitted()
        k = check_k(k)
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        X = check_matrix(X)
        if X.shape[1] != self.n_items_:
            raise InputError(
                f"X has {X.shape[1]} items but the model was fitted on {self.n_items_}"
            )
        if users.size and (users.min() < 0 or users.max() >= X.shape[0]):
            raise InputError(f"user indices must lie in [0, {X.shape[0]})")
        k = int(min(k, self.n_items_))
        items_out = np.empty((users.size, k), dtype=np.int64)
        scores_out = np.empty((users.size, k), dtype=np.float32)
        starts = range(0, users.size, batch_size)

        def one(start: int) -> tuple[np.ndarray, np.ndarray]:
            return self._top_k(users[start : start + batch_size], X, k, filter_seen)

        # Batches side by side on the cores: the heavy parts (NumPy, BLAS, the
        # boosters) release the GIL. Only many users are worth a line every 30 s.
        ticker = Ticker(f"{self.name}: users listed", users.size, every_s=30)
        threads = min(len(starts), os.cpu_count() or 1, 4) if self.threaded_scoring else 1
        # One batch (a served request) starts no pool.
        with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
            lists = pool.map(one, starts) if pool else map(one, starts)
            for start, (items, scores) in zip(starts, lists, strict=True):
                end = min(start + batch_size, users.size)
                items_out[start:end], scores_out[start:end] = items, scores
                if users.size > batch_size:
                    ticker.tick(end - start)
        return items_out, scores_out

    def _top_k(
        self, users: np.ndarray, X: sp.csr_matrix, k: int, filter_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One batch of :meth:`recommend`: the dense scores, seen items masked, top-``k``.

        A model that can rank without a dense score row overrides this; its
        lists must equal this one's.
        """
        return _dense_top_k(self, users, X, k, filter_seen)

    def score_users(self, users: np.ndarray, X: sp.spmatrix) -> np.ndarray:
        """Dense scores of every item for fitted user rows of ``X`` (nothing filtered):
        what :meth:`recommend` ranks, for a caller that masks items of its own.

        Returns:
            ``(len(users), n_items)`` float32, higher is better.
        """
        self._check_fitted()
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        X = check_matrix(X)
        if X.shape[1] != self.n_items_:
            raise InputError(
                f"X has {X.shape[1]} items but the model was fitted on {self.n_items_}"
            )
        return np.asarray(self._score(users, X), dtype=np.float32)

    def score_histories(self, H: sp.spmatrix) -> np.ndarray:
        """Scores of every item for histories the model need not have seen.

        Each row of ``H`` is one history over the model's items (weights as in
        the training matrix). Models whose scores depend only on the history
        row (EASE, item-kNN, content, popularity) score it as they would a
        fitted user with that row; ALS first solves the user's factors for it.
        Seen items are not filtered here.

        Returns:
            Dense ``(H.shape[0], n_items)`` float32 scores, higher is better.

        Raises:
            StateError: the model cannot score a history it was not fitted on
                (:attr:`folds_in` is False) or is not fitted.
            InputError: ``H`` has another number of items.
        """
        self._check_fitted()
        if not self.folds_in:
            raise StateError(
                f"{self.name or type(self).__name__} cannot score a history it was not "
                "fitted on; retrain to include it"
            )
        H = check_matrix(H)
        if H.shape[1] != self.n_items_:
            raise InputError(
                f"X has {H.shape[1]} items but the model was fitted on {self.n_items_}"
            )
        return np.asarray(self._score_histories(H), dtype=np.float32)

    def _score_histories(self, H: sp.csr_matrix) -> np.ndarray:
        """Scores of the rows of ``H`` (default: :meth:`_score`, which reads only the rows)."""
        return self._score(np.arange(H.shape[0]), H)

    def save(self, path: str | Path) -> Path:
        """Write the fitted model into folder ``path``; :func:`load_saved` reads it back.

        The folder names its model in :data:`MANIFEST` and holds what
        :meth:`_save` writes (a pickle unless the model says otherwise).
        """
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cls = type(self)
        (path / MANIFEST).write_text(
            json.dumps({"model": self.name, "class": f"{cls.__module__}:{cls.__qualname__}"})
        )
        self._save(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Read a model of this class written by :meth:`save`."""
        model = read_pickle(Path(path))
        if not isinstance(model, cls):
            raise InputError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def figures(self) -> dict[str, Any]:
        """Plots of what the model learned beyond its metrics, file name → matplotlib
        ``Figure`` (the caller saves and closes them); none by default."""
        return {}

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, as given to ``__init__``."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------ for subclasses
    @abstractmethod
    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        """Learn attributes from ``X``."""

    @abstractmethod
    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        """Dense scores, shape ``(len(users), n_items)``; higher is better."""

    def _save(self, path: Path) -> None:
        """Write the model's state into the existing folder ``path`` (default:
        :func:`write_pickle`, its arrays beside the pickle for :meth:`load` to map)."""
        write_pickle(self, path)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise StateError(f"{type(self).__name__} is not fitted; call fit() first")


#: File of a saved model's folder that names its model and class.
MANIFEST = "recommender.json"
_PICKLE = "model.pkl"
#: The pickled model's arrays, raw, one after another (:func:`write_pickle`) ...
_ARRAYS = "arrays.bin"
#: ... and where each starts and how long it is, in the order the pickle names them.
_SPANS = "arrays.json"
#: Byte alignment of each array in :data:`_ARRAYS` (a cache line; any dtype's is less).
_ALIGN = 64


def write_pickle(obj: Any, folder: Path) -> None:
    """Pickle ``obj`` into ``folder`` with its arrays kept out of the pickle, raw, in one
    file (pickle protocol 5's out-of-band buffers), so :func:`read_pickle` maps them
    into memory instead of reading and copying them.

    The 400 MB EASE model of a 2M-interaction run took 0.28 s to load with its
    file in the page cache (1.1 s inside MLflow's check of a logged model's
    input example); mapped, under a millisecond, and a page of weights is read
    only when a score needs it; processes that load the same file share its
    pages. Each file is written aside and moved into place, so a process that
    mapped the earlier files keeps reading them unchanged.
    """
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    spans, offset = [], 0
    staged = {name: folder / f".{name}.{os.getpid()}" for name in (_ARRAYS, _SPANS, _PICKLE)}
    with open(staged[_ARRAYS], "wb") as f:
        for buffer in buffers:
            raw = buffer.raw()
            pad = -offset % _ALIGN
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            spans.append([offset, raw.nbytes])
            offset += raw.nbytes
    staged[_SPANS].write_text(json.dumps(spans))
    staged[_PICKLE].write_bytes(payload)
    for name, partial in staged.items():
        os.replace(partial, folder / name)


def read_pickle(folder: Path) -> Any:
    """The object :func:`write_pickle` wrote into ``folder``, its arrays mapped from their
    file (copy-on-write: changing one in memory never changes the file); a folder
    with a plain ``model.pkl`` (saved before arrays were kept aside) is read whole."""
    import mmap

    spans_file = folder / _SPANS
    if not spans_file.is_file():
        with open(folder / _PICKLE, "rb") as f:
            return pickle.load(f)
    spans = json.loads(spans_file.read_text())
    with open(folder / _ARRAYS, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    view = memoryview(mapped)
    with open(folder / _PICKLE, "rb") as f:
        return pickle.load(f, buffers=[view[start : start + n] for start, n in spans])


def load_saved(path: str | Path) -> Recommender:
    """Read any model written by :meth:`Recommender.save`, through its own class's ``load``.

    A folder without :data:`MANIFEST` (saved before models named themselves)
    holds a pickle and loads as one.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.exists():
        return Recommender.load(path)
    module, _, name = json.loads(manifest.read_text())["class"].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.load(path)


def pair_times(X: sp.csr_matrix, timestamps: sp.spmatrix | None) -> np.ndarray | None:
    """The latest time of each stored entry of ``X``, aligned with ``X.data`` (0 where
    ``timestamps``, a :attr:`FitContext.timestamps` matrix, has none), or ``None``
    without timestamps."""
    if timestamps is None:
        return None
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return np.asarray(sp.csr_matrix(timestamps, dtype=np.float64)[rows, X.indices]).ravel()


def check_matrix(X: sp.spmatrix) -> sp.csr_matrix:
    """Validate and convert an interactions matrix to float32 CSR."""
    if not sp.issparse(X):
        raise InputError(f"X must be a scipy sparse matrix, got {type(X).__name__}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X must be a non-empty 2-D users × items matrix, got shape {X.shape}")
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise InputError("X must hold non-negative interaction weights")
    return X


def _dense_top_k(
    model: Recommender, users: np.ndarray, X: sp.csr_matrix, k: int, filter_seen: bool
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(model._score(users, X), dtype=np.float32)  # noqa: SLF001 - same package
    if filter_seen:
        scores[X[users].nonzero()] = -np.inf
    return top_k(scores, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``k`` of a dense score matrix, best first.

    Ties are broken by the lower item index, also at the cut-off: when more
    items share the ``k``-th best score than there are slots left, the lowest
    indices win. NaN counts as ``-inf``. Items scored ``-inf`` are returned as
    ``-1`` (their score stays ``-inf``). Cost is linear in the number of items
    per row: one pass narrows a long row to its candidates
    (:func:`_candidates`), then one partition and a few masks over those, plus
    sorting the ``k`` winners. A row whose best scores are spread over too many
    groups (many ties at the cut) ranks the items at or above its floor alone
    when they are few, else the whole row (:func:`_best_columns_by_key`).
    """
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k < 1 or n_rows == 0:
        return np.empty((n_rows, max(k, 0)), dtype=np.int64), np.empty(
            (n_rows, max(k, 0)), dtype=scores.dtype
        )
    part = np.empty((n_rows, k), dtype=np.int64)
    part_scores = np.empty((n_rows, k), dtype=scores.dtype)
    narrow, cols, sub, floor = _candidates(scores, k)
    if narrow.size:
        # The exact rule on the candidates alone: they are in item order, so
        # ties still go to the lower item index.
        at = np.nonzero(_select_k(sub, k))[1].reshape(narrow.size, k)
        part[narrow] = np.take_along_axis(cols, at, axis=1)
        part_scores[narrow] = np.take_along_axis(sub, at, axis=1)
    if narrow.size < n_rows:
        wide = np.setdiff1d(np.arange(n_rows), narrow) if narrow.size else slice(None)
        rows = scores[wide]
        if np.isnan(rows).any():
            rows = np.where(np.isnan(rows), -np.inf, rows)
        chosen = np.empty((rows.shape[0], k), dtype=np.int64)
        whole = np.arange(rows.shape[0])
        if floor is not None:
            low = floor[wide]
            over = rows >= np.where(np.isnan(low), -np.inf, low)
            counts = over.sum(axis=1)
            few = np.flatnonzero(counts <= n_items // 8)
            if few.size:
                chosen[few] = _best_over_floor(rows[few], over[few], k)
            whole = np.flatnonzero(counts > n_items // 8)
        if whole.size:
            rest = rows[whole]
            if rest.dtype == np.float32:
                chosen[whole] = _best_columns_by_key(rest, k)
            else:
                chosen[whole] = np.nonzero(_select_k(rest, k))[1].reshape(whole.size, k)
        part[wide] = chosen
        part_scores[wide] = np.take_along_axis(rows, chosen, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    items = np.where(np.isneginf(best), -1, items)
    return items, best


#: Items per group when :func:`top_k` narrows a long row down to its candidates.
_GROUP = 64


def _candidates(
    scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The rows worth narrowing, and for each the columns that can hold its
    top-``k`` (ties at the cut included), in ascending order, with their
    scores; last, every row's floor (``(n_rows, 1)``, NaN for a row with a
    NaN; ``None`` for short rows).

    The row's first ``G * 64`` items (``G = n_items // 64``) fall into ``G``
    groups, group ``g`` holding items ``g, g + G, g + 2G, ...``: the maxima of
    all groups are one reduction over a contiguous axis. The ``k``-th best
    group maximum is a floor for the row's ``k``-th best score (``k`` groups
    reach it, each with an item at least that good), so only the groups that
    reach it, and the short tail after the groups, can hold a winner. On
    50,000 items and ``k`` = 50 that is 3,200 candidates instead of 50,000
    (top-``k`` about 5x faster). Short rows, rows with a NaN and rows where
    more than a quarter of the items reach the floor (many equal scores, or
    ``-inf`` nearly everywhere) are not narrowed.
    """
    n_rows, n_items = scores.shape
    n_groups = n_items // _GROUP
    none = np.empty(0, dtype=np.int64)
    if n_groups < 4 * k:
        return none, none, none, None
    body = scores[:, : n_groups * _GROUP].reshape(n_rows, _GROUP, n_groups)
    peaks = body.max(axis=1)  # NaN anywhere in a group makes its maximum NaN
    tail = scores[:, n_groups * _GROUP :]
    floor = np.partition(peaks, n_groups - k, axis=1)[:, n_groups - k : n_groups - k + 1]
    reach = (peaks >= floor).sum(axis=1)
    nan = np.isnan(peaks).any(axis=1) | np.isnan(tail).any(axis=1)
    floor[nan] = np.nan  # partition counts NaN as the largest: no floor there
    ok = (reach * _GROUP * 4 <= n_items) & ~nan
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return none, none, none, floor
    peaks = peaks[rows] if rows.size < n_rows else peaks
    m = int(reach[rows].max())
    # The m best groups of each row (a row with fewer reaching the floor also
    # takes some that cannot win, harmless), in ascending order: then
    # (offset, group) order is item order.
    groups = np.sort(np.argpartition(-peaks, m - 1, axis=1)[:, :m], axis=1)
    offsets = np.arange(_GROUP)[None, :, None]
    cols = (groups[:, None, :] + offsets * n_groups).reshape(rows.size, _GROUP * m)
    sub = body[rows[:, None, None], offsets, groups[:, None, :]].reshape(rows.size, _GROUP * m)
    start = n_groups * _GROUP
    tail_cols = np.broadcast_to(np.arange(start, n_items), (rows.size, n_items - start))
    return rows, np.hstack([cols, tail_cols]), np.hstack([sub, tail[rows]]), floor


def _best_over_floor(rows: np.ndarray, over: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best columns of each row among those at or above its floor
    (``over``, at least ``k`` per row), ties to the lower index."""
    r, c = np.nonzero(over)
    order = np.lexsort((c, -rows[r, c], r))
    r, c = r[order], c[order]
    counts = np.bincount(r, minlength=rows.shape[0])
    slot = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
    kept = slot < k
    out = np.empty((rows.shape[0], k), dtype=np.int64)
    out[r[kept], slot[kept]] = c[kept]
    return out


def _best_columns_by_key(rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best columns of float32 rows (ties to the lower index), in ascending order.

    Each (score, column) pair becomes one int64 key, the score's bits in an
    order-keeping form above the complement of the column, so no two keys tie
    and one partition decides. NumPy's partition over many equal floats (a
    mostly-zero row) is about ten times slower than over distinct keys.
    """
    n = rows.shape[1]
    key = (rows + np.float32(0.0)).view(np.int32).astype(np.int64)  # -0.0 becomes 0.0
    key ^= (key >> 31) & 0x7FFFFFFF  # negative floats: larger magnitude, smaller key
    key <<= 32
    key |= 0xFFFFFFFF - np.arange(n, dtype=np.int64)
    kth = np.partition(key, n - k, axis=1)[:, n - k : n - k + 1]
    return np.nonzero(key >= kth)[1].reshape(rows.shape[0], k)


def _select_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask with exactly ``k`` True per row: the best scores, lowest index on ties.

    Only the rows with more ties at the cut-off than slots left pay for the
    tie-break (a running count along the row); the others keep every item at
    the cut. Scores with many equal values (content models, popularity) make
    such rows common, so the count runs in int32 on those rows alone.
    """
    n_items = scores.shape[1]
    kth = np.partition(scores, n_items - k, axis=1)[:, n_items - k : n_items - k + 1]
    above = scores > kth
    at_cut = scores == kth
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | at_cut
    tied = (at_cut.sum(axis=1, keepdims=True) > room).ravel()
    if tied.any():
        ties = at_cut[tied]
        keep = np.cumsum(ties, axis=1, dtype=np.int32) <= room[tied]
        chosen[tied] = above[tied] | (ties & keep)
    return chosen
