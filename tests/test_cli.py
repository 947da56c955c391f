"""The `recsys` command as a user runs it: exit codes, messages, files written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys.cli import main


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert (
        main(
            [
                "generate",
                "--users",
                "120",
                "--items",
                "60",
                "--interactions",
                "3000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_generate_writes_a_folder_the_loaders_read(synthetic):
    frame = pd.read_parquet(synthetic / "interactions.parquet")
    assert len(frame) == 3000 and frame["user_id"].nunique() == 120


def test_validate_passes_clean_data(synthetic, capsys):
    assert main(["validate", str(synthetic)]) == 0
    assert "all expectations passed" in capsys.readouterr().out


def test_validate_fails_bad_data_with_a_summary_on_stderr(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,stars\n1,10,4\n2,11,abc\n-3,12,5\n")
    code = main(
        ["validate", str(bad), "--user-col", "user", "--item-col", "item", "--rating-col", "stars"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "rating" in err and "FAILED" in err


def test_validate_names_a_missing_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,10\n")
    assert main(["validate", str(bad), "--user-col", "user", "--item-col", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_benchmark_writes_the_documented_report(synthetic, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(synthetic),
                "--protocol",
                "loo",
                "--models",
                "popularity,ease",
                "--output",
                str(out),
                "--no-cold-users",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["protocol"] == "loo"
    assert set(report["results"]) == {"popularity", "ease"}
    for row in report["results"].values():
        assert {
            "ndcg@10",
            "precision@10",
            "recall@10",
            "map@10",
            "coverage",
            "train_seconds",
        } <= set(row)
    assert "| ease |" in capsys.readouterr().out


def test_benchmark_seed_reaches_every_model_that_takes_one(synthetic, tmp_path):
    def run(seed: int) -> dict:
        out = tmp_path / f"seed-{seed}.json"
        argv = ["benchmark", "--data", str(synthetic), "--models", "popularity,als"]
        argv += ["--no-cold-users", "--seed", str(seed), "--output", str(out)]
        assert main(argv) == 0
        return json.loads(out.read_text())

    first, again, other = run(3), run(3), run(4)
    assert first["model_params"] == {"als": {"random_state": 3}}  # popularity takes no seed
    als = [r["results"]["als"] for r in (first, again, other)]
    assert als[0]["ndcg@10"] == als[1]["ndcg@10"]
    assert (als[0]["ndcg@10"], als[0]["novelty"]) != (als[2]["ndcg@10"], als[2]["novelty"])


def test_the_benchmark_seed_reaches_the_rankers_generators_too():
    from recsys.pipeline.benchmark import seeded_params

    params = seeded_params(["popularity", "als", "ranker"], 7)
    assert params["als"] == {"random_state": 7}
    generators = params["ranker"].pop("generator_params")
    assert params["ranker"] == {"random_state": 7}
    # Every generator that takes a seed gets it (the same model the run fits beside
    # the ranker, which it then takes); popularity takes none.
    assert generators["als"] == generators["attention"] == {"random_state": 7}
    assert "popularity" not in generators and "ranker" not in generators


def test_benchmark_reports_the_rerank_curve_and_plot(synthetic, tmp_path, capsys):
    out, plot = tmp_path / "report.json", tmp_path / "curve.png"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(synthetic),
                "--protocol",
                "loo",
                "--models",
                "popularity",
                "--output",
                str(out),
                "--no-cold-users",
                "--rerank",
                "ease",
                "--rerank-lams",
                "0,0.5,1",
                "--rerank-plot",
                str(plot),
            ]
        )
        == 0
    )
    section = json.loads(out.read_text())["rerank"]
    assert section["method"] == "discount" and section["model"] == "ease"
    points = section["points"]
    assert [p["lam"] for p in points] == [0.0, 0.5, 1.0]
    assert points[0]["ndcg_change"] == 0.0 and points[0]["popularity_change"] == 0.0
    # The discount pushes popular items down, so the average falls with the knob.
    assert points[2]["avg_popularity"] < points[0]["avg_popularity"]
    assert plot.stat().st_size > 0
    assert "re-ranking ease (discount, pool 100)" in capsys.readouterr().out


def test_an_unknown_model_is_a_one_line_error(synthetic, capsys):
    assert (
        main(["benchmark", "--data", str(synthetic), "--models", "nosuch", "--no-cold-users"]) == 2
    )
    assert "unknown model 'nosuch'" in capsys.readouterr().err
