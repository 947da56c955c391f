"""A saved model's arrays live beside its pickle and are mapped, not read, on load."""

from __future__ import annotations

import pickle

import numpy as np
import scipy.sparse as sp

from recsys.models import make_model
from recsys.models.base import load_saved, read_pickle, write_pickle


def _ease():
    rng = np.random.default_rng(0)
    X = sp.random(40, 30, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data[:] = 1.0
    return make_model("ease").fit(X), X


def test_arrays_are_kept_beside_the_pickle_and_read_back_equal(tmp_path):
    model, X = _ease()
    model.save(tmp_path / "m")
    weights = model.weights_.nbytes
    assert (tmp_path / "m" / "model.pkl").stat().st_size < weights  # the weights are aside
    assert (tmp_path / "m" / "arrays.bin").stat().st_size >= weights
    back = load_saved(tmp_path / "m")
    users = np.arange(X.shape[0])
    got, want = back.recommend(users, X, 5), model.recommend(users, X, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_a_loaded_array_is_copy_on_write_and_a_resave_leaves_it_unchanged(tmp_path):
    arrays = {"weights": np.arange(1000, dtype=np.float64), "empty": np.zeros(0)}
    write_pickle(arrays, tmp_path)
    first = read_pickle(tmp_path)
    first["weights"][0] = -1.0  # a private page: the file keeps 0
    assert read_pickle(tmp_path)["weights"][0] == 0.0
    write_pickle({"weights": np.full(1000, 7.0), "empty": np.zeros(0)}, tmp_path)
    assert first["weights"][1] == 1.0 and first["weights"][999] == 999.0  # the old file's
    assert read_pickle(tmp_path)["weights"][1] == 7.0
    assert first["empty"].shape == (0,)


def test_a_model_saved_as_one_pickle_still_loads(tmp_path):
    model, X = _ease()
    folder = tmp_path / "before"
    model.save(folder)
    for name in ("arrays.bin", "arrays.json"):
        (folder / name).unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    back = load_saved(folder)
    np.testing.assert_array_equal(
        back.recommend(np.arange(5), X, 3)[0], model.recommend(np.arange(5), X, 3)[0]
    )
