"""The operator page's data and HTML, built from a real pipeline run.

One module-scoped pipeline run (two fast models, tiny synthetic data) on a
fresh SQLite MLflow store, plus one batch that fails validation, give the page
a champion, a leaderboard, a metric history and a failed validation to show.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from recsys import config
from recsys.data.validation import DataValidationError
from recsys.pipeline import RunFolder
from recsys.ui import page as ui

MODELS = ("popularity", "itemknn")
K = 5
RUN_KEY = "manual__2026-01-02T03:04:05+00:00"
BAD_KEY = "bad-batch"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """RECSYS_HOME and MLflow after one good pipeline run and one rejected batch."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline, validate_data

    tmp = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        mp.setenv("MLFLOW_UI_URL", "http://mlflow.example:5000/")
        data = generate_dataset(120, 60, 3000, seed=3)
        good = write_dataset(data, tmp / "good")
        mp.setenv("RECSYS_DATA_PATH", str(good))  # the deployment's data: model "recsys"
        run_pipeline(PipelineOptions(data_path=str(good), models=MODELS, k=K), RUN_KEY)
        bad = data.interactions.assign(rating=data.interactions["rating"] + 100)
        bad_path = write_dataset(dataclasses.replace(data, interactions=bad), tmp / "bad")
        with pytest.raises(DataValidationError):
            validate_data(BAD_KEY, str(bad_path))
        yield tmp
        # page data is read inside the context, so every test sees these stores


@pytest.fixture(scope="module")
def page(store):
    return ui.build_page()


def test_champion_is_the_promoted_best_candidate_with_its_decision(page):
    champion = page["champion"]
    assert champion["version"] == 1
    best = page["latest"]["rows"][0]
    assert champion["model_type"] == best["model"]
    assert champion["run_key"] == RUN_KEY
    assert champion["decision"]["verdict"] == "promote"
    assert champion["decision"]["metric"] == f"ndcg@{K}"
    assert champion["decision"]["reason"].startswith("promote: no champion yet")
    assert champion["metrics"][f"ndcg@{K}"] == pytest.approx(best["metrics"][f"ndcg@{K}"])
    assert next(iter(champion["metrics"])) == f"ndcg@{K}"
    assert champion["version_url"] == "http://mlflow.example:5000/#/models/recsys/versions/1"
    assert champion["run_url"].endswith(f"/runs/{champion['run_id']}")


def test_leaderboard_lists_every_candidate_best_first(page):
    latest = page["latest"]
    assert latest["run_key"] == RUN_KEY
    assert latest["primary"] == f"ndcg@{K}"
    candidates = [row for row in latest["rows"] if row["role"] == "candidate"]
    assert sorted(row["model"] for row in candidates) == sorted(MODELS)
    scores = [row["metrics"][f"ndcg@{K}"] for row in candidates]
    assert scores == sorted(scores, reverse=True)
    assert latest["columns"][0] == f"ndcg@{K}"
    assert latest["columns"][-1] == "train_seconds"
    assert latest["decision"]["verdict"] == "promote"
    assert {p["model"] for p in latest["plots"]} == set(MODELS)


def test_history_holds_the_run_with_its_best_model(page):
    (point,) = page["history"]
    assert point["run_key"] == RUN_KEY
    assert set(point["scores"]) == set(MODELS)
    assert point["best_model"] == page["champion"]["model_type"]


def test_validation_lists_the_failed_batch_first_with_its_failures(page):
    failed, passed = page["validations"]
    assert (failed["run_key"], failed["success"]) == (BAD_KEY, False)
    assert (passed["run_key"], passed["success"]) == (RunFolder(RUN_KEY).path.name, True)
    suites = {s["name"]: s["success"] for s in failed["suites"]}
    assert suites == {"interactions": False, "items": True, "users": True}
    assert any("rating" in line for line in failed["failures"])
    assert passed["docs_url"] == f"data-docs/{passed['run_key']}/index.html"


def test_html_shows_champion_leaderboard_history_and_validation(page):
    html = ui.render_page(page)
    champion = page["champion"]
    assert f"recsys v{champion['version']}</a>" in html
    assert f"<strong>{champion['model_type']}</strong>" in html
    for model in MODELS:
        assert f"<td>{model}</td>" in html
    assert 'class="champion"' not in html  # the first run had no champion to score
    assert html.count("<svg") == 2
    assert "FAILED" in html and "passed" in html
    assert "interactions: fail" in html


def test_leaderboard_ends_with_the_champion_scored_on_the_same_holdout(page, store):
    evaluation = json.loads((RunFolder(RUN_KEY).path / "evaluation.json").read_text())
    champion = page["champion"]
    evaluation["champion"] = {
        "version": 1,
        "model_type": champion["model_type"],
        "run_id": champion["run_id"],
        "metrics": {f"ndcg@{K}": 0.25},
        "added_by_a_newer_pipeline": {"nested": True},
    }
    group = {"run_key": RUN_KEY, "runs": [], "start_time": None}
    rows = ui.leaderboard_rows(evaluation, group, "http://m")
    assert [r["role"] for r in rows] == ["candidate"] * len(MODELS) + ["champion"]
    assert rows[-1]["model"] == f"champion v1 ({champion['model_type']})"
    assert rows[-1]["metrics"] == {f"ndcg@{K}": 0.25}
    assert rows[-1]["run_url"] == champion["run_url"].replace(
        "http://mlflow.example:5000", "http://m"
    )


def test_the_page_reads_the_folder_the_pipeline_wrote(store, page):
    folder = RunFolder(RUN_KEY)
    assert folder.path.parent == config.runs_root() and folder.exists()
    assert page["latest"]["decision"] == folder.read_json("decision.json")


def test_empty_stores_render_a_page_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    page = ui.build_page(root=tmp_path / "no-runs")
    assert (page["champion"], page["latest"], page["history"], page["validations"]) == (
        None,
        None,
        [],
        [],
    )
    assert "No model holds the champion alias yet" in ui.render_page(page)


@pytest.mark.parametrize(
    "value, text",
    [(0.123456, "0.1235"), (66.0, "66"), (None, "—"), ("0.5", "0.5000"), ("none", "none")],
)
def test_format_number(value, text):
    assert ui.format_number(value) == text


# ------------------------------------------------------------------- the app
async def _deny(request: Request) -> None:
    if request.headers.get("authorization") != "Bearer good":
        raise HTTPException(401, "Not authenticated")


def _client() -> TestClient:
    return TestClient(
        ui.create_app(authorize=_deny, login_url=lambda n: f"/login?next={n}"),
        follow_redirects=False,
    )


def test_anonymous_browser_is_sent_to_login_and_api_call_refused(store):
    client = _client()
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=http://testserver/"
    data = client.get("/page.json")
    assert (data.status_code, data.json()) == (401, {"detail": "Not authenticated"})
    docs = client.get(f"/data-docs/{BAD_KEY}/index.html")
    assert docs.status_code == 401


def test_logged_in_user_gets_page_and_data_docs(store, page):
    client = _client()
    auth = {"authorization": "Bearer good"}
    html = client.get("/", headers=auth)
    assert html.status_code == 200
    assert "Leaderboard of the latest run" in html.text
    data = client.get("/page.json", headers=auth).json()
    assert data["champion"]["version"] == 1
    docs = client.get(f"/data-docs/{BAD_KEY}/index.html", headers=auth)
    assert docs.status_code == 200 and "<html" in docs.text.lower()
    plot = page["latest"]["plots"][0]
    png = client.get(f"/plots/{plot['run_id']}/{plot['path']}", headers=auth)
    assert png.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "path", ["..%2Fvalidation.json", "..%2F..%2F..%2Fmlflow.db", "%2Fetc%2Fpasswd", "missing.html"]
)
def test_data_docs_refuse_paths_outside_the_docs_folder(store, path):
    response = _client().get(
        f"/data-docs/{BAD_KEY}/{path}", headers={"authorization": "Bearer good"}
    )
    assert response.status_code == 404


def test_data_docs_file_guards_run_key_and_path(store):
    root = config.runs_root()
    with pytest.raises(ui.PageError, match="no such run: '..'"):
        ui.data_docs_file(root, "..", "index.html")
    with pytest.raises(ui.PageError, match="no Data Docs file '../validation.json'"):
        ui.data_docs_file(root, BAD_KEY, "../validation.json")
    assert ui.data_docs_file(root, BAD_KEY, "").name == "index.html"


def test_plot_route_serves_only_logged_plots(store, page):
    run_id = page["latest"]["rows"][0]["run_id"]
    with pytest.raises(ui.PageError, match="has no plot 'split.json'"):
        ui.plot_bytes(run_id, "split.json")
    with pytest.raises(ui.PageError, match="no such run"):
        ui.plot_bytes("../x", "plots/metrics.png")


def test_page_json_is_plain_json(store):
    data = _client().get("/page.json", headers={"authorization": "Bearer good"}).json()
    assert json.loads(json.dumps(data)) == data


def test_leaderboard_chart_draws_only_ranking_metrics_at_k():
    latest = {
        "columns": ["ndcg@5", "avg_popularity", "gap.age.ndcg@5", "recall@5"],
        "rows": [
            {
                "model": "m",
                "model_type": "m",
                "role": "candidate",
                "metrics": {"ndcg@5": 0.5, "avg_popularity": 50.0, "recall@5": 0.25},
            }
        ],
    }
    svg = ui.leaderboard_chart(latest, {"m": "#123456"})
    assert ">ndcg@5<" in svg and ">recall@5<" in svg
    assert "avg_popularity" not in svg and "gap.age" not in svg
