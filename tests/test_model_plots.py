"""Models that draw figures of themselves (Recommender.figures) get them written for MLflow."""

from __future__ import annotations

from recsys.models import make_model
from recsys.pipeline.reports import model_plots


def test_training_curves_are_drawn_for_a_model_with_history(tmp_path):
    model = make_model("attention")
    model.history_ = {"loss": [3.0, 2.5, 2.2], "val_ndcg@10": [0.1, 0.2, 0.25]}
    assert model_plots(model, tmp_path / "plots") == {"plots": tmp_path / "plots"}
    png = (tmp_path / "plots" / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_a_model_without_extra_figures_logs_no_plot_folder(tmp_path):
    assert model_plots(make_model("popularity"), tmp_path / "plots") == {}
    assert not (tmp_path / "plots").exists()
