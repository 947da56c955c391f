"""Tuning: budgets, a train-only validation carve, and a search that finds something."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.training.tuning import TuningInputError, tune_model


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    from recsys.data.generate import generate_dataset

    return generate_dataset(120, 60, 3000, seed=5).interactions


def test_zero_trials_keeps_the_defaults_without_fitting(train):
    result = tune_model("ease", train, n_trials=0)
    assert result.params == {} and np.isnan(result.score) and result.trials == []
    assert result.to_dict()["score"] is None


def test_trials_search_the_space_on_the_validation_carve(train):
    result = tune_model("ease", train, protocol="temporal", n_trials=3, k=5, seed=1)
    assert len(result.trials) == 3
    assert set(result.params) == {"l2"} and 10.0 <= result.params["l2"] <= 5000.0
    assert result.score == max(t["score"] for t in result.trials)
    assert result.metric == "ndcg@5"
    again = tune_model("ease", train, protocol="temporal", n_trials=3, k=5, seed=1)
    assert again.params == result.params  # seeded sampler


def test_the_test_split_is_never_an_input(train, monkeypatch):
    seen = []
    import recsys.training.tuning as tuning

    real = tuning.validation_split
    monkeypatch.setattr(
        tuning,
        "validation_split",
        lambda frame, *a, **kw: seen.append(len(frame)) or real(frame, *a, **kw),
    )
    tune_model("itemknn", train, n_trials=1, k=5)
    assert seen == [len(train)]


def test_bad_budgets_are_refused(train):
    with pytest.raises(TuningInputError, match="budgets must be positive"):
        tune_model("ease", train, n_trials=-1)
    with pytest.raises(TuningInputError, match="unknown protocol 'bogus'"):
        tune_model("ease", train, protocol="bogus", n_trials=1)


def test_trials_get_the_feature_tables_a_training_run_gets(train, monkeypatch):
    # A model conditioned on user profiles fails without context.user_features;
    # the tuning carve must build them from its own fit part, as a run does.
    from recsys.data.generate import generate_dataset
    from recsys.models.attention import SelfAttentionRecommender

    synthetic = generate_dataset(120, 60, 3000, seed=5)
    monkeypatch.setattr(
        SelfAttentionRecommender,
        "search_space",
        {
            "use_profile": True,
            "epochs": ("int", 1, 2, False),
            "d_model": 8,
            "n_blocks": 1,
            "max_len": 10,
            "batch_size": 256,
        },
    )
    result = tune_model(
        "attention",
        synthetic.interactions,
        protocol="loo",
        n_trials=1,
        k=5,
        items=synthetic.items,
        users=synthetic.users,
    )
    assert len(result.trials) == 1 and np.isfinite(result.score)
