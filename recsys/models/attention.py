"""A SASRec-style self-attention recommender (Keras 3 on TensorFlow).

Each user's history is a time-ordered item sequence. The network embeds the
last ``max_len`` items plus their positions, runs ``n_blocks`` blocks of
causal multi-head self-attention and a point-wise feed-forward layer (pre-layer
norm, residuals, dropout), and at every position scores the whole catalogue
against the tied item embeddings: training is next-item prediction with a full
softmax at every position. The score of a user is the last position's logits.

Early stopping: each user's last training item is held out, NDCG@10 over the
full catalogue (seen items removed) is measured after every epoch, and the
best epoch's weights are kept. ``history_`` holds the per-epoch loss and
validation NDCG@10.

This is the only module of recsys that imports TensorFlow/Keras, and it does
so inside methods: importing it (to list the registry) stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)

_WEIGHTS_FILE = "network.weights.h5"
_PARAMS_FILE = "params.json"
_STATE_FILE = "state.npz"
_HISTORY_FILE = "history.json"
VAL_METRIC = "val_ndcg@10"


class SelfAttentionRecommender(Recommender):
    """Next-item self-attention over each user's time-ordered history.

    Args:
        max_len: items of history the network sees (the most recent ones).
        d_model: width of item/position embeddings and of every block.
        n_heads: attention heads per block (``d_model`` must divide by it).
        n_blocks: stacked attention + feed-forward blocks.
        dropout: dropout rate on embeddings, attention and feed-forward.
        epochs: most training epochs; early stopping usually ends sooner.
        batch_size: training windows per gradient step.
        learning_rate: Adam step size.
        patience: epochs without a better validation NDCG@10 before stopping.
        random_state: seed for weights, dropout and shuffling.
        use_profile: add a projection of the user's profile vector
            (numeric columns of ``context.user_features``) to every position.
    """

    name = "attention"

    def __init__(
        self,
        max_len: int = 50,
        d_model: int = 64,
        n_heads: int = 2,
        n_blocks: int = 2,
        dropout: float = 0.2,
        epochs: int = 200,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        patience: int = 5,
        random_state: int = 0,
        use_profile: bool = False,
    ) -> None:
        self.max_len = max_len
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_blocks = n_blocks
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.random_state = random_state
        self.use_profile = use_profile

    # ------------------------------------------------------------------ fit
    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        self._check_params()
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(int(self.random_state))
        tf.config.experimental.enable_op_determinism()
        gpus = tf.config.list_logical_devices("GPU")
        log.info("training on %s", gpus[0].name if gpus else "CPU")
        self.seq_items_, self.seq_indptr_ = _sequences_from(X, context.sequences)
        self.profile_ = self._profiles(context.user_features, X.shape[0])
        train_items, train_indptr, val_rows, val_targets = _hold_out_last(
            self.seq_items_, self.seq_indptr_
        )
        inputs, targets, weights, window_users = _training_windows(
            train_items, train_indptr, self.max_len
        )
        if not len(inputs):
            raise ValueError("no user has two or more interactions; nothing to learn from")
        self.network_ = self._new_network()
        self.network_.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        monitor = _ValidationMonitor(self, train_items, train_indptr, val_rows, val_targets)
        start = time.perf_counter()
        self.network_.fit(
            self._inputs(inputs, window_users), targets, sample_weight=weights,
            epochs=int(self.epochs), batch_size=int(self.batch_size), shuffle=True,
            callbacks=[monitor.as_callback(keras)], verbose=0,
        )
        self.history_ = monitor.history
        self.best_epoch_ = monitor.best_epoch
        log.info("trained %d epochs in %.1fs (best epoch %d, %s %.4f)",
                 len(self.history_["loss"]), time.perf_counter() - start,
                 self.best_epoch_, VAL_METRIC, monitor.best)

    def _check_params(self) -> None:
        if self.max_len < 1 or self.d_model < 1 or self.n_heads < 1 or self.n_blocks < 1:
            raise ValueError("max_len, d_model, n_heads and n_blocks must be at least 1")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def _profiles(self, user_features: pd.DataFrame | None, n_users: int) -> np.ndarray | None:
        """Standardised numeric profile columns per user row (nulls → 0), or ``None``."""
        if not self.use_profile:
            return None
        if user_features is None:
            raise ValueError("use_profile=True needs context.user_features")
        frame = user_features.reindex(pd.RangeIndex(n_users)).select_dtypes("number")
        if frame.shape[1] == 0:
            raise ValueError("context.user_features has no numeric column to use as a profile")
        values = frame.to_numpy(dtype=np.float64)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        values = (values - mean) / np.where(std > 0, std, 1.0)
        return np.nan_to_num(values).astype(np.float32)

    def _inputs(self, seqs: np.ndarray, users: np.ndarray) -> Any:
        if self.profile_ is None:
            return seqs
        return {"seq": seqs, "profile": self.profile_[users]}

    def _new_network(self) -> Any:
        net = _make_network(
            n_items=self.n_items_, max_len=self.max_len, d_model=self.d_model,
            n_heads=self.n_heads, n_blocks=self.n_blocks, dropout=self.dropout,
            profile_dim=0 if self.profile_ is None else self.profile_.shape[1],
        )
        dummy = np.zeros((1, self.max_len), dtype=np.int32)
        net(self._inputs(dummy, np.zeros(1, dtype=np.int64)))  # create the weights
        return net

    # ---------------------------------------------------------------- score
    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        seqs = self._histories(users, X)
        profile_users = np.minimum(users, self.n_users_ - 1)
        return self._last_logits(seqs, profile_users)

    def _last_logits(self, seqs: np.ndarray, users: np.ndarray, batch: int = 1024) -> np.ndarray:
        """Final-position logits over all items for left-padded histories."""
        net = self._network()
        out = np.empty((len(seqs), self.n_items_), dtype=np.float32)
        for start in range(0, len(seqs), batch):
            part = slice(start, start + batch)
            out[part] = np.asarray(net.compiled_score_last(self._inputs(seqs[part], users[part])))
        return out

    def _histories(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        """Left-padded last ``max_len`` items per user row.

        A user whose items in ``X`` are exactly the items of the fitted
        sequence uses that time order; any other user (new rows, changed
        history) uses the items of its ``X`` row in index order.
        """
        rows = X[users]
        rows.sort_indices()
        from_x = _left_pad(rows.indices, rows.indptr, np.arange(len(users)), self.max_len)
        known = users < self.n_users_
        fitted = _left_pad(self.seq_items_, self.seq_indptr_,
                           np.where(known, users, 0), self.max_len)
        stored = _pattern(self.seq_items_, self.seq_indptr_, np.where(known, users, 0),
                          self.n_items_)
        same = known & (abs(stored - (rows != 0).astype(np.float32)).getnnz(axis=1) == 0)
        return np.where(same[:, None], fitted, from_x)

    def _network(self) -> Any:
        if getattr(self, "network_", None) is None:
            weights = self.__dict__.pop("weights_", None)
            self.network_ = self._new_network()
            if weights is not None:
                self.network_.set_weights(weights)
        return self.network_

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> Path:
        """Write params (JSON), sequences/profiles (npz), history and Keras weights."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / _PARAMS_FILE).write_text(json.dumps(self.get_params(), indent=2))
        state = {"n_users": self.n_users_, "n_items": self.n_items_,
                 "seq_items": self.seq_items_, "seq_indptr": self.seq_indptr_,
                 "best_epoch": self.best_epoch_}
        if self.profile_ is not None:
            state["profile"] = self.profile_
        np.savez(path / _STATE_FILE, **state)
        (path / _HISTORY_FILE).write_text(json.dumps(self.history_))
        self._network().save_weights(path / _WEIGHTS_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SelfAttentionRecommender:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not (path / _WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"{path} holds no {_WEIGHTS_FILE}; not a saved {cls.__name__}")
        model = cls(**json.loads((path / _PARAMS_FILE).read_text()))
        with np.load(path / _STATE_FILE) as state:
            model.n_users_, model.n_items_ = int(state["n_users"]), int(state["n_items"])
            model.seq_items_, model.seq_indptr_ = state["seq_items"], state["seq_indptr"]
            model.best_epoch_ = int(state["best_epoch"])
            model.profile_ = state["profile"] if "profile" in state else None
        model.history_ = json.loads((path / _HISTORY_FILE).read_text())
        model.network_ = model._new_network()
        model.network_.load_weights(path / _WEIGHTS_FILE)
        return model

    def __getstate__(self) -> dict[str, Any]:
        """Pickle weights as arrays, never the Keras object; it is rebuilt on first use."""
        state = dict(self.__dict__)
        net = state.pop("network_", None)
        if net is not None:
            state["weights_"] = net.get_weights()
        return state


# ------------------------------------------------------------ index helpers
def _sequences_from(
    X: sp.csr_matrix, sequences: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat item indices plus row pointers (CSR-style) of each user's time order."""
    if sequences is None:
        X = X.copy()
        X.sort_indices()
        return X.indices.astype(np.int64), X.indptr.astype(np.int64)
    if len(sequences) != X.shape[0]:
        raise ValueError(
            f"context.sequences has {len(sequences)} rows but X has {X.shape[0]} users"
        )
    lens = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if lens.sum() else (
        np.zeros(0, dtype=np.int64))
    if flat.size and (flat.min() < 0 or flat.max() >= X.shape[1]):
        raise ValueError(f"context.sequences holds item indices outside [0, {X.shape[1]})")
    return flat, np.concatenate([[0], np.cumsum(lens)])


def _hold_out_last(
    items: np.ndarray, indptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop each user's last item where the user has two or more.

    Returns the remaining flat items and row pointers, the users held out and
    their held-out items.
    """
    lens = np.diff(indptr)
    val_rows = np.flatnonzero(lens >= 2)
    last = indptr[val_rows + 1] - 1
    keep = np.ones(len(items), dtype=bool)
    keep[last] = False
    new_lens = lens - (lens >= 2)
    return items[keep], np.concatenate([[0], np.cumsum(new_lens)]), val_rows, items[last]


def _left_pad(items: np.ndarray, indptr: np.ndarray, rows: np.ndarray, max_len: int) -> np.ndarray:
    """``(len(rows), max_len)`` int32: each row's last items shifted by +1, 0 = padding."""
    lens = indptr[rows + 1] - indptr[rows]
    keep = np.minimum(lens, max_len)
    out = np.zeros((len(rows), max_len), dtype=np.int32)
    row = np.repeat(np.arange(len(rows)), keep)
    j = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)
    src = np.repeat(indptr[rows + 1] - keep, keep) + j
    out[row, max_len - np.repeat(keep, keep) + j] = items[src] + 1
    return out


def _pattern(items: np.ndarray, indptr: np.ndarray, rows: np.ndarray, n_items: int) -> sp.csr_matrix:
    """0/1 CSR of the items in the given rows' sequences."""
    lens = indptr[rows + 1] - indptr[rows]
    src = np.repeat(indptr[rows], lens) + (
        np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    )
    m = sp.csr_matrix((np.ones(len(src), dtype=np.float32),
                       (np.repeat(np.arange(len(rows)), lens), items[src])),
                      shape=(len(rows), n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _training_windows(
    items: np.ndarray, indptr: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut every user's (input, next item) pairs into left-padded windows.

    A user with ``n`` items has ``n - 1`` pairs, split into windows of
    ``max_len`` from the most recent backwards, so no pair is lost.

    Returns:
        ``inputs`` (+1-shifted item indices, 0 = padding), ``targets`` (item
        indices), ``weights`` (1 on real positions), each ``(n_windows,
        max_len)``, and the user row of each window.
    """
    lens = np.diff(indptr)
    pairs = np.maximum(lens - 1, 0)
    user = np.repeat(np.arange(len(lens)), pairs)
    j = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    src = np.repeat(indptr[:-1], pairs) + j
    back = np.repeat(pairs, pairs) - 1 - j
    keys, window = np.unique(np.stack([user, back // max_len]), axis=1, return_inverse=True)
    window = window.ravel()
    col = max_len - 1 - back % max_len
    shape = (keys.shape[1], max_len)
    inputs, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    weights = np.zeros(shape, np.float32)
    inputs[window, col] = items[src] + 1
    targets[window, col] = items[src + 1]
    weights[window, col] = 1.0
    return inputs, targets, weights, keys[0]


def ndcg_at_10(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row NDCG@10 of one relevant item among full-catalogue ``scores``.

    Items scored ``-inf`` (seen) never outrank; ties are counted in the
    target's favour.
    """
    target_scores = scores[np.arange(len(targets)), targets]
    rank = (scores > target_scores[:, None]).sum(axis=1)
    return np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)


class _ValidationMonitor:
    """Per-epoch validation NDCG@10 with patience and best-weight restore."""

    def __init__(self, model: SelfAttentionRecommender, items: np.ndarray,
                 indptr: np.ndarray, val_rows: np.ndarray, val_targets: np.ndarray) -> None:
        self.model, self.val_rows, self.val_targets = model, val_rows, val_targets
        self.inputs = _left_pad(items, indptr, val_rows, model.max_len)
        self.seen = _pattern(items, indptr, val_rows, model.n_items_)
        self.history: dict[str, list[float]] = {"loss": [], VAL_METRIC: []}
        self.best, self.best_epoch, self.best_weights, self.wait = -1.0, 0, None, 0

    def evaluate(self) -> float:
        if not len(self.val_rows):
            return float("nan")
        scores = self.model._last_logits(self.inputs, self.val_rows)
        scores[self.seen.nonzero()] = -np.inf
        return float(ndcg_at_10(scores, self.val_targets).mean())

    def end_epoch(self, epoch: int, logs: dict | None, network: Any) -> bool:
        """Record the epoch; return True when training should stop."""
        ndcg = self.evaluate()
        self.history["loss"].append(float((logs or {}).get("loss", math.nan)))
        self.history[VAL_METRIC].append(ndcg)
        log.debug("epoch %d loss %.4f %s %.4f", epoch + 1, self.history["loss"][-1],
                  VAL_METRIC, ndcg)
        if math.isnan(ndcg) or ndcg > self.best:
            self.best, self.best_epoch, self.wait = ndcg, epoch + 1, 0
            self.best_weights = network.get_weights()
            return False
        self.wait += 1
        return self.wait >= self.model.patience

    def as_callback(self, keras: Any) -> Any:
        monitor = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if monitor.end_epoch(epoch, logs, self.model):
                    self.model.stop_training = True

            def on_train_end(self, logs: dict | None = None) -> None:
                if monitor.best_weights is not None:
                    self.model.set_weights(monitor.best_weights)

        return _Callback()


# ---------------------------------------------------------------- network
def _make_network(*, n_items: int, max_len: int, d_model: int, n_heads: int, n_blocks: int,
                  dropout: float, profile_dim: int) -> Any:
    """Build the Keras model (imports Keras here, so module import stays cheap)."""
    import keras
    import tensorflow as tf
    from keras import layers, ops

    class SASRecNetwork(keras.Model):
        """Item + position embeddings → causal attention blocks → tied-embedding logits."""

        def __init__(self) -> None:
            super().__init__()
            self.item_embedding = layers.Embedding(n_items + 1, d_model)  # row 0 = padding
            self.position_embedding = layers.Embedding(max_len, d_model)
            self.profile_projection = layers.Dense(d_model) if profile_dim else None
            self.input_dropout = layers.Dropout(dropout)
            self.blocks = [_block() for _ in range(n_blocks)]
            self.final_norm = layers.LayerNormalization(epsilon=1e-6)

        def encode(self, inputs: Any, training: bool = False) -> Any:
            seq = inputs["seq"] if profile_dim else inputs
            valid = ops.not_equal(seq, 0)
            mask = ops.cast(valid, "float32")[..., None]
            x = self.item_embedding(seq) * math.sqrt(d_model)
            x = x + self.position_embedding(ops.arange(max_len))[None]
            if profile_dim:
                x = x + self.profile_projection(inputs["profile"])[:, None, :]
            x = self.input_dropout(x, training=training) * mask
            attention_mask = ops.repeat(valid[:, None, :], max_len, axis=1)
            for norm1, attention, drop1, norm2, ff1, ff2, drop2 in self.blocks:
                h = norm1(x)
                h = attention(h, h, attention_mask=attention_mask, use_causal_mask=True,
                              training=training)
                x = x + drop1(h, training=training)
                h = ff2(ff1(norm2(x)))
                x = (x + drop2(h, training=training)) * mask
            return self.final_norm(x)

        def _logits(self, hidden: Any) -> Any:
            return ops.matmul(hidden, ops.transpose(self.item_embedding.embeddings[1:]))

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self._logits(self.encode(inputs, training=training))

        def score_last(self, inputs: Any) -> Any:
            return self._logits(self.encode(inputs, training=False)[:, -1, :])

    def _block() -> list:
        return [
            layers.LayerNormalization(epsilon=1e-6),
            layers.MultiHeadAttention(n_heads, d_model // n_heads, dropout=dropout),
            layers.Dropout(dropout),
            layers.LayerNormalization(epsilon=1e-6),
            layers.Dense(d_model, activation="relu"),
            layers.Dense(d_model),
            layers.Dropout(dropout),
        ]

    net = SASRecNetwork()
    net.compiled_score_last = tf.function(net.score_last, reduce_retracing=True)
    return net
