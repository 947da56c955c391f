"""ML-100K leave-last-out benchmark of the self-attention recommender.

Per user, the last interaction by time (ties: file order) is the test item;
the model trains on the rest (its own early stopping holds out each user's
last *training* item, never the test item). Every item is ranked, training
items are removed, no negatives are sampled. Prints NDCG@10, HR@10 and the
training time.

Usage: python benchmarks/attention_loo.py [/path/to/ml-100k] [key=value ...]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.ids import IdMap
from recsys.models.attention import SelfAttentionRecommender
from recsys.models.base import FitContext

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def split_last(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ordered = data.sort_values(["user_id", "timestamp"], kind="stable")
    is_last = ~ordered.duplicated("user_id", keep="last")
    return ordered[~is_last], ordered[is_last]


def main(argv: list[str]) -> dict[str, float]:
    root = Path(argv[0]) if argv and "=" not in argv[0] else DEFAULT_DIR
    params = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv if "=" in a)}
    data = pd.read_csv(root / "u.data", sep="\t", names=["user_id", "item_id", "rating",
                                                          "timestamp"])
    train, test = split_last(data)
    ids = IdMap.from_frame(train, extra_items=pd.Index(data["item_id"].unique()))
    X = ids.to_matrix(train, weight_col=None)
    model = SelfAttentionRecommender(**params)
    start = time.perf_counter()
    model.fit(X, FitContext(sequences=ids.sequences(train)))
    seconds = time.perf_counter() - start
    users = ids.user_index(test["user_id"].to_numpy())
    targets = ids.item_index(test["item_id"].to_numpy())
    items, _ = model.recommend(users, X, k=10)
    hit = items == targets[:, None]
    rank = np.argmax(hit, axis=1)
    found = hit.any(axis=1)
    result = {"ndcg@10": float(np.where(found, 1 / np.log2(rank + 2), 0).mean()),
              "hr@10": float(found.mean()), "train_seconds": seconds,
              "epochs_run": len(model.history_["loss"]), "best_epoch": model.best_epoch_,
              "best_val_ndcg@10": max(model.history_["val_ndcg@10"])}
    print(json.dumps({"params": model.get_params(), **result}, indent=1))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
