"""One contract suite for every registered model.

The oracle is a checkerboard: even users interacted with even items, odd users
with odd items, and each user's own "diagonal" item (item u for user u) is
held out. Any personalised model must rank that held-out item first.
A sequence model (class attribute ``sequential = True``) sees the same matrix
with each user's items in a time order that walks its parity class
i → i + 2 (mod N) from just after its own item, so the held-out item is the
natural next one; every other user shows that step, so it is learnable.
A model joins this suite by being registered in ``recsys.models.MODELS``;
give it tiny settings in ``FAST_PARAMS`` if its defaults are slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.ids import IdMap
from recsys.models import available_models, make_model, model_class
from recsys.models.base import FitContext, Recommender

N = 20  # users == items, so user u's held-out item is item u

#: Constructor parameters that keep each model tiny and fast here.
FAST_PARAMS: dict[str, dict] = {
    "itemknn": {"k_neighbours": 10},
    "als": {"factors": 8, "iterations": 10},
    "spark_als": {"factors": 8, "iterations": 10, "blocks": 1},
    "ease": {"l2": 1.0},
    "ranker": {
        "generators": ("popularity", "itemknn", "ease"),
        "n_candidates": 5,
        "holdout": "random",
        "n_folds": 3,
        "generator_params": {"ease": {"l2": 1.0}, "itemknn": {"k_neighbours": 10}},
        "param_grid": {"max_depth": (3,), "learning_rate": (0.3,), "min_child_weight": (0.0,)},
        "max_rounds": 20,
        "n_jobs": 1,
    },
    "attention": {
        "max_len": 10,
        "d_model": 16,
        "n_heads": 1,
        "n_blocks": 1,
        "dropout": 0.0,
        "epochs": 15,
        "learning_rate": 0.01,
        "patience": 15,
    },
}

#: Models that give everyone the same list (exempt from the oracle).
NON_PERSONALISED = {"popularity"}


def checkerboard() -> sp.csr_matrix:
    """Users × items: same parity interacts, the diagonal is held out."""
    u, i = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    return sp.csr_matrix(((u % 2 == i % 2) & (u != i)).astype(np.float32))


def context(X: sp.csr_matrix, name: str = "") -> FitContext:
    """Each user's items as a sequence: index order, or the cyclic walk for sequence models."""
    if name and getattr(model_class(name), "sequential", False):
        return FitContext(sequences=[_walk_after(X[u].indices, u) for u in range(X.shape[0])])
    return FitContext(sequences=[X[u].indices.astype(np.int64) for u in range(X.shape[0])])


def _walk_after(items: np.ndarray, u: int) -> np.ndarray:
    """``items`` ordered u + 2, u + 4, ... (mod N), so the walk's next step is u."""
    return items[np.argsort((items - u) % N)].astype(np.int64)


def build(name: str) -> Recommender:
    return make_model(name, **FAST_PARAMS.get(name, {}))


@pytest.fixture(scope="module", params=available_models())
def fitted(request) -> tuple[str, Recommender, sp.csr_matrix]:
    X = checkerboard()
    return request.param, build(request.param).fit(X, context(X, request.param)), X


@pytest.mark.parametrize("name", available_models())
def test_fit_returns_self_and_stores_only_params_before(name):
    model = build(name)
    assert vars(model) == model.get_params()
    X = checkerboard()
    assert model.fit(X, context(X, name)) is model


def test_learned_attributes_end_in_underscore(fitted):
    _, model, _ = fitted
    learned = set(vars(model)) - set(model.get_params())
    assert learned
    assert all(attr.endswith("_") for attr in learned), learned


def test_oracle_held_out_item_first_or_one_list_for_all(fitted):
    """Personalised: precision@1 = 1. Non-personalised: one list, minus seen items."""
    name, model, X = fitted
    if name in NON_PERSONALISED:
        items, _ = model.recommend(np.arange(N), X, k=N, filter_seen=False)
        assert (items == items[0]).all()
        filtered, _ = model.recommend(np.arange(N), X, k=N)
        for u in range(N):
            expected = [i for i in items[0] if X[u, i] == 0]
            assert filtered[u][filtered[u] >= 0].tolist() == expected
    else:
        items, _ = model.recommend(np.arange(N), X, k=3)
        precision_at_1 = float(np.mean(items[:, 0] == np.arange(N)))
        assert precision_at_1 == 1.0


def test_recommend_before_fit_raises():
    for name in available_models():
        with pytest.raises(RuntimeError, match="is not fitted; call fit"):
            build(name).recommend([0], checkerboard(), k=3)


def test_batch_equals_one_user_at_a_time(fitted):
    _, model, X = fitted
    batch_items, batch_scores = model.recommend(np.arange(N), X, k=5, batch_size=7)
    for u in range(N):
        items, scores = model.recommend(u, X, k=5)
        np.testing.assert_array_equal(items[0], batch_items[u])
        np.testing.assert_allclose(scores[0], batch_scores[u], rtol=1e-4, atol=1e-6)


def test_save_load_gives_identical_recommendations(fitted, tmp_path):
    _, model, X = fitted
    loaded = type(model).load(model.save(tmp_path / "model"))
    before = model.recommend(np.arange(N), X, k=5)
    after = loaded.recommend(np.arange(N), X, k=5)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.get_params() == model.get_params()


def test_wrongly_shaped_X_raises_exact_message(fitted):
    _, model, _ = fitted
    wrong = sp.csr_matrix((N, N + 1), dtype=np.float32)
    message = f"X has {N + 1} items but the model was fitted on {N}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        model.recommend([0], wrong, k=3)


def test_dense_X_is_rejected_with_exact_message(fitted):
    name, _, X = fitted
    with pytest.raises(ValueError, match="^X must be a scipy sparse matrix, got ndarray$"):
        build(name).fit(X.toarray())


def test_filter_seen_never_returns_seen_items(fitted):
    _, model, X = fitted
    items, _ = model.recommend(np.arange(N), X, k=N)
    for u in range(N):
        returned = items[u][items[u] >= 0]
        assert not set(returned) & set(X[u].indices)
        assert len(returned) == N - X[u].nnz


def test_same_random_state_same_results(fitted):
    name, model, X = fitted
    again = build(name).fit(X, context(X, name))
    first = model.recommend(np.arange(N), X, k=5)
    second = again.recommend(np.arange(N), X, k=5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_k_larger_than_catalogue(fitted):
    _, model, X = fitted
    items, scores = model.recommend(np.arange(N), X, k=10 * N, filter_seen=False)
    assert items.shape == scores.shape == (N, N)
    assert all(sorted(row) == list(range(N)) for row in items.tolist())
    items, scores = model.recommend(np.arange(N), X, k=10 * N)
    assert np.isneginf(scores[items == -1]).all()


# ------------------------------------------------------------------ fold-in
def test_fold_in_scores_a_history_it_never_saw_like_a_fitted_user(fitted):
    """A model that folds in, given a brand-new row equal to user u's history,
    puts u's held-out item first, as it does for u itself."""
    name, model, X = fitted
    if not model.folds_in:
        pytest.skip(f"{name} does not fold in (see the next test)")
    scores = model.score_histories(X)
    assert scores.shape == (N, N) and scores.dtype == np.float32
    scores[X.nonzero()] = -np.inf
    if name in NON_PERSONALISED:
        own = np.asarray(model._score(np.arange(N), X))  # noqa: SLF001 - the oracle
        own[X.nonzero()] = -np.inf
        np.testing.assert_array_equal(scores.argmax(axis=1), own.argmax(axis=1))
    else:
        assert (scores.argmax(axis=1) == np.arange(N)).all()


def test_a_model_that_cannot_fold_in_says_so_with_exact_message(fitted):
    name, model, X = fitted
    if model.folds_in:
        wrong = sp.csr_matrix((1, N + 1), dtype=np.float32)
        message = f"X has {N + 1} items but the model was fitted on {N}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            model.score_histories(wrong)
        return
    message = f"{name} cannot score a history it was not fitted on; retrain to include it"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        model.score_histories(X[:1])


def test_fold_in_survives_save_and_load(fitted, tmp_path):
    """What fold-in caches (ALS's solver) is rebuilt after a load, never saved."""
    _, model, X = fitted
    if not model.folds_in:
        pytest.skip("does not fold in")
    before = model.score_histories(X[:3])
    loaded = type(model).load(model.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.score_histories(X[:3]), before, rtol=1e-5, atol=1e-6)


# ------------------------------------------------- served through MLflow
USER_IDS = [f"u{u}" for u in range(N)]
ITEM_IDS = [f"i{i}" for i in range(N)]
#: Users asked in the fresh process: known ones, and one the model never saw.
ASKED = ["u0", "u3", "u7", "nobody"]


@pytest.fixture(scope="module")
def logged_models(tmp_path_factory):
    """Every registered model, fitted on the checkerboard and logged as the pyfunc
    (:func:`recsys.registry.log_model_run`) in a throw-away store: name → model URI."""
    from recsys import registry

    root = tmp_path_factory.mktemp("contract-mlflow")
    X = checkerboard()
    id_map = IdMap(pd.Index(USER_IDS, name="user_id"), pd.Index(ITEM_IDS, name="item_id"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (root / "artifacts").as_uri())
        mp.setenv("RECSYS_EXPERIMENT", "contract")
        uris = {}
        for name in available_models():
            model = build(name).fit(X, context(X, name))
            info = registry.log_model_run(
                model,
                id_map=id_map,
                train_matrix=X,
                params=model.get_params(),
                metrics={},
                split_info={"method": "checkerboard"},
                data_hash="checkerboard",
                run_name=f"contract-{name}",
                k=3,
            )
            uris[name] = info.model_uri
        yield {"uris": uris, "env": dict(os.environ)}


def test_every_model_logged_as_pyfunc_loads_and_answers_in_a_fresh_process(logged_models):
    """The champion of any type serves: each logged model is loaded back by a new
    Python process through ``mlflow.pyfunc.load_model`` (each model's own ``load``
    underneath) and answers known users with their held-out item first."""
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "out = {}\n"
        "for name, uri in json.loads(sys.argv[1]).items():\n"
        "    model = mlflow.pyfunc.load_model(uri)\n"
        "    frame = model.predict(pd.DataFrame({'user_id': json.loads(sys.argv[2])}),"
        " params={'k': 3})\n"
        "    out[name] = frame.to_dict(orient='list')\n"
        "sys.stdout.write(json.dumps(out))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**logged_models["env"], "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(logged_models["uris"]), json.dumps(ASKED)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(answers) == set(available_models())
    for name, answer in answers.items():
        frame = pd.DataFrame(answer)
        assert list(pd.unique(frame["user_id"])) == ASKED, name
        assert (frame.groupby("user_id")["rank"].max() == 3).all(), name
        firsts = frame[frame["rank"] == 1].set_index("user_id")["item_id"]
        if name not in NON_PERSONALISED:
            for user in ASKED[:-1]:
                assert firsts[user] == f"i{user[1:]}", (name, user)
        known = frame[frame["user_id"] != "nobody"]["served_by"]
        assert (known == "model").all(), name
        assert frame[frame["user_id"] == "nobody"]["served_by"].iloc[0] == "global", name
