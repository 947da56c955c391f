"""ML-100K leave-last-out benchmark of the self-attention recommender alone.

Uses the project's own ``loo`` split (:func:`recsys.data.splits.leave_last_out`:
each user's last interaction by time, ties by row order, is the test item)
and the same id map and fit context as ``recsys benchmark``. The model trains
on the rest; its early stopping holds out each user's last *training* item,
never the test item. Every item is ranked, training items are removed, no
negatives are sampled. Prints the validation curve's best, test NDCG@10,
HR@10 and the training time as JSON. For hyper-parameter search read
``best_val_ndcg@10`` (training data only), never the test figures.

Usage: python benchmarks/attention_loo.py [/path/to/ml-100k] [key=json_value ...]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from recsys.constants import ITEM_COL, USER_COL
from recsys.data.loaders import load_input
from recsys.data.splits import split_interactions
from recsys.ids import IdMap
from recsys.models.attention import SelfAttentionRecommender
from recsys.models.base import FitContext

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def main(argv: list[str]) -> dict[str, float]:
    root = Path(argv[0]) if argv and "=" not in argv[0] else DEFAULT_DIR
    params = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv if "=" in a)}
    dataset = load_input(str(root))
    train, test = split_interactions(dataset.interactions, "loo", n=1)
    extra = dataset.items[ITEM_COL] if dataset.items is not None else None
    ids = IdMap.from_frame(train, extra_items=extra)
    X = ids.to_matrix(train)
    model = SelfAttentionRecommender(**params)
    start = time.perf_counter()
    model.fit(X, FitContext(sequences=ids.sequences(train)))
    seconds = time.perf_counter() - start
    users = ids.user_index(test[USER_COL].to_numpy())
    targets = ids.item_index(test[ITEM_COL].to_numpy())
    items, _ = model.recommend(users, X, k=10)
    hit = items == targets[:, None]
    rank = np.argmax(hit, axis=1)
    found = hit.any(axis=1)
    result = {
        "ndcg@10": float(np.where(found, 1 / np.log2(rank + 2), 0).mean()),
        "hr@10": float(found.mean()),
        "train_seconds": round(seconds, 1),
        "load_average": os.getloadavg()[0],
        "epochs_run": len(model.history_["loss"]),
        "best_epoch": model.best_epoch_,
        "best_val_ndcg@10": max(model.history_["val_ndcg@10"]),
    }
    print(json.dumps({"params": model.get_params(), **result}))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
