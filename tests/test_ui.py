"""The operator page's data, HTML and app, built from real pipeline runs.

One module-scoped store: two pipeline runs of the deployment's registered
model ``recsys`` on one data set (the first makes a champion, the second's
best candidate is the same model and is held, so it stays ``challenger``),
one run of a second registered model ``recsys-other`` on another data set,
and two batches that fail validation, one of them carrying markup where a
user id and a rating should be.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from recsys import config
from recsys.data.validation import DataValidationError
from recsys.pipeline import RunFolder
from recsys.ui import app as ui_app
from recsys.ui import charts, datadocs, render, runs, words
from recsys.ui import page as ui

MODELS = ("popularity", "itemknn")
K = 5
PRIMARY = f"ndcg@{K}"
RUN_1 = "manual__2026-01-02T03:04:05+00:00"
RUN_2 = "manual__2026-01-03T03:04:05+00:00"
OTHER = "other__2026-01-04T00:00:00+00:00"
OTHER_MODEL = "recsys-other"
BAD_KEY = "bad-batch"
XSS_KEY = "xss-batch"
EVIL_ID = "<img src=x onerror=alert(1)>"
EVIL_RATING = "<script>alert(2)</script>"
AUTH = {"authorization": "Bearer good"}


def _xss_batch(path):
    rows = [
        {"user_id": str(u), "item_id": str(i), "rating": "4", "timestamp": 1000 + u * 10 + i}
        for u in range(5)
        for i in range(5)
    ]
    rows += [{"user_id": EVIL_ID, "item_id": "1", "rating": "4", "timestamp": 5}] * 3
    rows[1]["rating"] = EVIL_RATING
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """RECSYS_HOME and MLflow after three pipeline runs (two models) and two rejected batches."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline, validate_data

    tmp = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        mp.setenv("MLFLOW_UI_URL", "http://mlflow.example:5000/")
        mp.delenv("RECSYS_MODEL_NAME", raising=False)
        mp.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
        data = generate_dataset(120, 60, 3000, seed=3)
        good = write_dataset(data, tmp / "good")
        mp.setenv("RECSYS_DATA_PATH", str(good))  # the deployment's data: model "recsys"
        for key in (RUN_1, RUN_2):
            run_pipeline(PipelineOptions(data_path=str(good), models=MODELS, k=K), key)
        other = write_dataset(generate_dataset(100, 50, 2500, seed=8), tmp / "other")
        run_pipeline(
            PipelineOptions(data_path=str(other), models=MODELS, k=K, model_name=OTHER_MODEL),
            OTHER,
        )
        bad = data.interactions.assign(rating=data.interactions["rating"] + 100)
        bad_path = write_dataset(dataclasses.replace(data, interactions=bad), tmp / "bad")
        for key, path, fmt in (
            (BAD_KEY, bad_path, None),
            (XSS_KEY, _xss_batch(tmp / "xss.csv"), "csv"),
        ):
            with pytest.raises(DataValidationError):
                validate_data(key, str(path), data_format=fmt)
        yield tmp
        # page data is read inside the context, so every test sees these stores


@pytest.fixture(scope="module")
def page(store):
    return ui.build_page()


@pytest.fixture(scope="module")
def other_page(store):
    return ui.build_page(name=OTHER_MODEL)


@pytest.fixture(scope="module")
def html(page):
    return render.render_page(page)


def _folder(run_key: str) -> str:
    return config.safe_name(run_key)


# ------------------------------------------------------ one registered model
def test_picker_lists_every_registered_model_with_its_champion(page, other_page):
    names = [(m["name"], m["champion_version"], m["selected"]) for m in page["models"]]
    assert names == [("recsys", 1, True), (OTHER_MODEL, 1, False)]
    assert [m["name"] for m in other_page["models"] if m["selected"]] == [OTHER_MODEL]
    assert all(m["last_updated"].endswith("UTC") for m in page["models"])


def test_every_section_shows_only_the_chosen_model(page, other_page):
    assert page["latest"]["run_key"] == RUN_2
    assert [p["run_key"] for p in page["history"]] == [RUN_1, RUN_2]
    assert other_page["latest"]["run_key"] == OTHER
    assert [p["run_key"] for p in other_page["history"]] == [OTHER]
    assert other_page["champion"]["run_key"] == OTHER
    assert other_page["champion"]["version_url"].endswith("/#/models/recsys-other/versions/1")
    assert other_page["challenger"] is None

    def scopes(p):
        return {(v["run_key"], v["scope"]) for v in p["validations"]}

    rejected = {(BAD_KEY, "rejected"), (XSS_KEY, "rejected")}
    assert scopes(page) == {(_folder(RUN_1), "model"), (_folder(RUN_2), "model")} | rejected
    assert scopes(other_page) == {(_folder(OTHER), "model")} | rejected


def test_runs_without_the_tag_belong_to_the_default_model(store):
    from recsys.registry import views

    untagged = [
        r for r in views.list_model_runs("recsys") if "recsys.registered_model" in r["tags"]
    ]
    assert all(r["tags"]["recsys.registered_model"] == "recsys" for r in untagged)
    assert {r["tags"]["recsys.run_key"] for r in views.list_model_runs("recsys")} == {RUN_1, RUN_2}
    assert runs.folder_model(RunFolder(OTHER)) == OTHER_MODEL
    assert runs.folder_model(RunFolder(RUN_1)) == "recsys"
    assert runs.folder_model(RunFolder(BAD_KEY)) is None


def test_the_picker_switches_the_page(store):
    client = _client()
    shown = client.get(f"/?model={OTHER_MODEL}", headers=AUTH)
    assert shown.status_code == 200
    assert f"<title>Recommender · {OTHER_MODEL}</title>" in shown.text
    assert f'<option value="{OTHER_MODEL}" selected>' in shown.text
    assert 'href="?model=recsys-other" class="selected" aria-current="page"' in shown.text
    assert RUN_2 not in shown.text and OTHER in shown.text
    data = client.get(f"/page.json?model={OTHER_MODEL}", headers=AUTH).json()
    assert data["model_name"] == OTHER_MODEL


def test_an_unknown_model_is_404_with_a_message(store):
    client = _client()
    html = client.get("/?model=nope", headers={**AUTH, "accept": "text/html"})
    assert html.status_code == 404
    assert "no registered model named &#39;nope&#39;" in html.text
    data = client.get("/page.json?model=nope", headers=AUTH)
    assert (data.status_code, data.json()) == (404, {"detail": "no registered model named 'nope'"})


# ------------------------------------------------------------- the leaderboard
def test_leaderboard_compares_every_row_on_the_served_basis(page):
    latest = page["latest"]
    folder = RunFolder(RUN_2)
    evaluation = folder.read_json("evaluation.json")
    assert {r["basis"] for r in latest["rows"]} == {"served"} and not latest["mixed_basis"]
    for row in latest["rows"]:
        if row["role"] == "candidate":
            served = folder.model_result(row["model"])["served"]
            assert row["metrics"][PRIMARY] == pytest.approx(served[PRIMARY])
        else:
            assert row["metrics"][PRIMARY] == evaluation["champion"]["metrics"][PRIMARY]
    scores = [row["metrics"][PRIMARY] for row in latest["rows"]]
    assert scores == sorted(scores, reverse=True)
    test_users = folder.test()["user_id"].nunique()
    assert {row["metrics"]["users"] for row in latest["rows"]} == {test_users}


def test_the_same_model_shows_one_score_as_candidate_and_as_champion(page):
    """Regression: the champion (all test users) and its own model as a candidate
    (warm users only) showed 0.4302 and 0.4323 in one table."""
    rows = page["latest"]["rows"]
    champion = next(r for r in rows if r["role"] == "champion")
    same = next(r for r in rows if r["role"] == "candidate" and r["model"] == champion["model"])
    assert same["metrics"][PRIMARY] == pytest.approx(champion["metrics"][PRIMARY])
    warm = next(r for r in page["latest"]["warm_rows"] if r["model"] == champion["model"])
    assert warm["metrics"][PRIMARY] != pytest.approx(champion["metrics"][PRIMARY])


def test_warm_user_figures_are_kept_apart_and_labelled(page, html):
    warm = page["latest"]["warm_rows"]
    assert {r["role"] for r in warm} == {"candidate"} and {r["basis"] for r in warm} == {"warm"}
    assert "n_users_evaluated" in page["latest"]["warm_columns"]
    assert "n_users_evaluated" not in page["latest"]["columns"]
    assert "every test user of this run, exactly as served" in html
    assert "Candidates on warm test users only" in html
    assert "not comparable with the champion" in html


def test_columns_follow_reading_order(page):
    columns = page["latest"]["columns"]
    stems = [c.split("@")[0] for c in columns[:6]]
    assert stems == ["ndcg", "precision", "recall", "map", "hit_rate", "mrr"]
    beyond = [c for c in columns if c in words.BEYOND]
    assert beyond == [b for b in words.BEYOND if b in columns]
    first_gap = columns.index(f"fairness_gap.{PRIMARY}")
    assert all(columns.index(b) < first_gap for b in beyond)
    assert columns[-2:] == ["train_seconds", "users"]
    assert not any(c.startswith("slice.") for c in columns)


def test_order_columns_puts_counts_and_timings_last():
    names = [
        "n_users_evaluated",
        "gap.age_band.ndcg@10",
        "novelty",
        "coverage",
        "recall@10",
        "ndcg@10",
        "slice.activity.cold.ndcg@10",
        "fairness_gap.ndcg@10",
        "catalogue_coverage",
        "hit_rate@10",
        "precision@10",
        "map@10",
        "train_seconds",
        "gini",
    ]
    assert words.order_columns(names, "ndcg@10") == [
        "ndcg@10",
        "precision@10",
        "recall@10",
        "map@10",
        "hit_rate@10",
        "coverage",
        "novelty",
        "gini",
        "catalogue_coverage",
        "fairness_gap.ndcg@10",
        "gap.age_band.ndcg@10",
        "n_users_evaluated",
        "train_seconds",
    ]


def test_leaderboard_falls_back_to_mlflow_figures_labelled_warm(store):
    from recsys.registry import views

    group = runs.group_runs(views.list_model_runs("recsys"))[0]
    board = runs.leaderboard_rows(None, RunFolder(RUN_2), group, "http://m")
    assert {r["basis"] for r in board["served"]} == {"warm"} and board["warm"] == []
    assert sorted(r["model"] for r in board["served"]) == sorted(MODELS)


# ------------------------------------------------------ champion, challenger
def test_champion_and_challenger_with_decisions_in_words(page):
    champion, challenger = page["champion"], page["challenger"]
    assert (champion["version"], champion["run_key"]) == (1, RUN_1)
    assert champion["decision"]["headline"] == (
        "First champion: version 1 had no earlier model to compare with"
    )
    assert champion["decision"]["how"].startswith("Decided by the gate")
    (load,) = champion["decision"]["checks"]
    assert load["title"] == "Load check" and load["text"].startswith("passed — loaded; 20 sample")
    assert (challenger["version"], challenger["run_key"]) == (2, RUN_2)
    assert challenger["decision"]["headline"] == (
        "Held: version 2 did not beat version 1, which keeps serving"
    )
    assert {c["title"] for c in challenger["decision"]["checks"]} >= {
        "Margin check",
        "Bootstrap check",
        "Load check",
    }
    assert champion["basis"] == "served" and PRIMARY in champion["metrics"]


def test_html_has_no_raw_decision_fields(html):
    assert 'id="challenger-card"' in html and "recsys v2</a>" in html
    assert "First champion: version 1 had no earlier model to compare with" in html
    assert "Load check: passed — loaded" in html
    for raw in ("first_run", "manual false", "check.load", "kind ", "verdict"):
        assert raw not in html


@pytest.mark.parametrize(
    "record, headline, how",
    [
        (
            {"promote": True, "kind": "gate", "candidate_version": 3, "champion_version": 2},
            "Promoted: version 3 replaced version 2",
            "Decided by the gate",
        ),
        (
            {
                "promote": True,
                "kind": "manual_promote",
                "manual": True,
                "candidate_version": 4,
                "champion_version": 3,
            },
            "Promoted by hand: version 4 serves in place of version 3",
            "Decided by a person",
        ),
        (
            {
                "promote": True,
                "kind": "rollback",
                "manual": True,
                "candidate_version": 2,
                "champion_version": 4,
            },
            "Rolled back: version 2 serves again in place of version 4",
            "Decided by a person (rollback)",
        ),
    ],
)
def test_describe_decision(record, headline, how):
    words_ = words.describe_decision(record)
    assert (words_["headline"], words_["how"]) == (headline, how)


def test_decision_from_tags_alone_still_reads_in_words():
    tags = {
        "recsys.decision.verdict": "hold",
        "recsys.decision.kind": "gate",
        "recsys.decision.manual": "false",
        "recsys.decision.metric": "ndcg@10",
        "recsys.decision.candidate_score": "0.41",
        "recsys.decision.champion_score": "0.43",
        "recsys.decision.margin": "0.0",
        "recsys.decision.candidate_version": "5",
        "recsys.decision.champion_version": "4",
        "recsys.decision.check.load": "pass",
        "recsys.decision.check.margin": "fail",
    }
    said = words.describe_decision(words.decision_from_tags(tags, "recsys.decision."))
    assert said["headline"] == "Held: version 5 did not beat version 4, which keeps serving"
    assert said["comparison"] == (
        "NDCG@10: candidate 0.4100 against champion 0.4300 (gain -0.0200, required 0.0000)"
    )
    assert [c["title"] + ": " + c["text"] for c in said["checks"]] == [
        "Load check: passed",
        "Margin check: FAILED",
    ]


# ---------------------------------------------------------------------- charts
def test_html_draws_the_four_kinds_of_chart(page, html):
    assert html.count("<svg") == 3  # metrics, slices, history (this run has no trade-off)
    charts_ = render.page_charts(page)
    for metric in (PRIMARY, f"precision@{K}", f"recall@{K}", f"map@{K}", f"hit_rate@{K}"):
        assert f">{words.metric_label(metric)}<" in charts_["metrics"]
    assert ">catalogue coverage<" in charts_["metrics"]
    assert "n_users_evaluated" not in charts_["metrics"]
    assert ">activity: cold<" in charts_["slices"] and ">champion v1 (" in charts_["slices"]
    assert ">champion at the time<" in charts_["history"]
    assert "plots/metrics.png" not in html  # the one-axis bar chart of every metric


def test_tradeoff_chart_draws_a_rerank_report():
    rerank = {
        "model": "ease",
        "method": "discount",
        "points": [
            {"lam": lam, "ndcg@10": 0.3 - lam / 10, "avg_popularity": 200 - 100 * lam}
            for lam in (0.0, 0.2, 0.4)
        ],
    }
    svg = charts.tradeoff_chart(rerank, "ndcg@10")
    assert ">λ=0.2<" in svg and ">re-ranking ease (discount)<" in svg
    assert charts.tradeoff_chart(None, "ndcg@10") is None


def test_chart_text_is_escaped_and_never_mathtext():
    rows = [
        {
            "label": "<b>$x^2$</b>",
            "model_type": "m",
            "role": "candidate",
            "metrics": {"ndcg@5": 0.5},
        }
    ]
    svg = charts.metrics_chart(rows, {"m": "#123456"})
    assert "&lt;b&gt;$x^2$&lt;/b&gt;" in svg and "<b>" not in svg


# ---------------------------------------------------------------- the history
def test_history_is_on_the_served_basis_with_the_champion_of_the_day(page):
    first, second = page["history"]
    assert set(first["basis"].values()) == {"served"}
    assert first["champion"] is None
    champion = RunFolder(RUN_2).read_json("evaluation.json")["champion"]["metrics"][PRIMARY]
    assert second["champion"] == champion
    assert second["best_model"] == page["champion"]["model_type"]
    assert second["best_score"] == max(second["scores"].values())


def test_history_table_shows_each_run_best_score(page, html):
    point = page["history"][-1]
    row = (
        f"<td>{point['run_key']}</td><td>{point['started_at']}</td>"
        f'<td class="left">{point["best_model"]}</td>'
        f"<td>{words.format_number(point['best_score'])}</td>"
    )
    assert row in html


# -------------------------------------------------------------- validation
def test_validation_lists_rejected_batches_with_their_failures(page):
    rows = {v["run_key"]: v for v in page["validations"]}
    bad = rows[BAD_KEY]
    assert bad["success"] is False and bad["scope"] == "rejected"
    assert {s["name"]: s["success"] for s in bad["suites"]} == {
        "interactions": False,
        "items": True,
        "users": True,
    }
    assert any("rating" in line for line in bad["failures"])
    assert rows[_folder(RUN_1)]["report_url"] == f"data-docs/{_folder(RUN_1)}/"


def test_html_labels_rejected_batches(html):
    assert "rejected batch — no model" in html
    assert "FAILED" in html and "passed" in html


# ---------------------------------------------------------------- data docs
def test_validation_report_renders_without_scripts(store):
    response = _client().get(f"/data-docs/{XSS_KEY}/", headers=AUTH)
    assert response.status_code == 200
    text = response.text
    assert "<script" not in text and "onerror=" not in text.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert "user_id=&lt;img src=x onerror=alert(1)&gt;" in text
    assert "interactions" in text and "FAILED" in text
    assert "validation of interactions" in text  # a link to GX's own page


def test_gx_pages_are_served_rebuilt_offline_and_inert(store):
    report = datadocs.report_data(config.runs_root(), XSS_KEY)
    (validation,) = [p for p in report["gx_pages"] if p["title"] == "validation of interactions"]
    response = _client().get(f"/data-docs/{XSS_KEY}/{validation['url']}", headers=AUTH)
    assert response.status_code == 200
    text = response.text
    assert "<script" not in text and "<img" not in text and "https://" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "sandbox" in response.headers["content-security-policy"]
    assert "Back to the validation report" in text


def test_index_of_data_docs_is_the_report(store):
    client = _client()
    assert (
        client.get(f"/data-docs/{XSS_KEY}/index.html", headers=AUTH).text
        == client.get(f"/data-docs/{XSS_KEY}/", headers=AUTH).text
    )


def test_with_a_pseudonym_key_no_raw_id_is_shown(store, monkeypatch):
    from recsys.data.prepare import pseudonymise_ids

    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "page-test-key")
    (pseudonym,) = pseudonymise_ids([EVIL_ID], b"page-test-key")
    client = _client()
    report = client.get(f"/data-docs/{XSS_KEY}/", headers=AUTH).text
    assert f"user_id={pseudonym}" in report and "onerror" not in report
    assert "User ids below are pseudonyms" in report
    page_html = client.get("/", headers=AUTH).text
    assert "onerror" not in page_html and pseudonym in page_html
    gx = datadocs.gx_pages(RunFolder(XSS_KEY))[0]["url"]
    refused = client.get(f"/data-docs/{XSS_KEY}/{gx}", headers=AUTH)
    assert refused.status_code == 404 and "raw ids" in refused.json()["detail"]


@pytest.mark.parametrize(
    "path", ["..%2Fvalidation.json", "..%2F..%2F..%2Fmlflow.db", "%2Fetc%2Fpasswd", "missing.html"]
)
def test_data_docs_refuse_paths_outside_the_docs_folder(store, path):
    response = _client().get(f"/data-docs/{BAD_KEY}/{path}", headers=AUTH)
    assert response.status_code == 404


def test_data_docs_file_guards_run_key_and_path(store):
    root = config.runs_root()
    with pytest.raises(ui.PageError, match="no such run: '..'"):
        datadocs.data_docs_file(root, "..", "index.html")
    with pytest.raises(ui.PageError, match="no Data Docs file '../validation.json'"):
        datadocs.data_docs_file(root, BAD_KEY, "../validation.json")
    assert datadocs.data_docs_file(root, BAD_KEY, "").name == "index.html"


def test_sanitiser_keeps_structure_and_shows_markup_in_cells_as_text():
    dirty = (
        "<html><head><title>T</title><script src='https://cdn/x.js'></script>"
        "<link rel=stylesheet href='https://cdn/b.css'></head><body onload='x()'>"
        "<div class='card' onclick='evil()'><a href='javascript:alert(1)'>j</a>"
        "<a href='expectations/a.html'>ok</a><script>alert(3)</script>"
        "<table><tr><td><div>$<img src=x onerror=alert(1)><b>b</b></div></td></tr></table>"
        "<img src='https://s3/logo.png'></div></body></html>"
    )
    clean = datadocs.sanitise_gx_html(dirty, "<style>s</style>")
    assert "<title>T</title>" in clean and "<style>s</style>" in clean
    assert '<div class="card"><a>j</a><a href="expectations/a.html">ok</a>' in clean
    assert "alert(3)" not in clean and "cdn" not in clean and "s3/logo" not in clean
    assert "<td><div>$&lt;img src=x onerror=alert(1)&gt;<b>b</b></div></td>" in clean
    assert "onload" not in clean and "onclick" not in clean


# ------------------------------------------------------------------- the app
async def _deny(request: Request) -> None:
    if request.headers.get("authorization") != "Bearer good":
        raise HTTPException(401, "Not authenticated")


def _client() -> TestClient:
    return TestClient(
        ui_app.create_app(authorize=_deny, login_url=lambda n: f"/login?next={n}"),
        follow_redirects=False,
        raise_server_exceptions=False,
    )


def test_anonymous_browser_is_sent_to_login_and_api_call_refused(store):
    client = _client()
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=http://testserver/"
    data = client.get("/page.json")
    assert (data.status_code, data.json()) == (401, {"detail": "Not authenticated"})
    assert client.get(f"/data-docs/{BAD_KEY}/").status_code == 401


def test_logged_in_user_gets_page_and_plots(store, page):
    client = _client()
    response = client.get("/", headers=AUTH)
    assert response.status_code == 200 and "Latest run" in response.text
    assert client.get("/page.json", headers=AUTH).json()["champion"]["version"] == 1


def _routes(page) -> list[tuple[str, dict, int]]:
    run_id = page["latest"]["rows"][0]["run_id"]
    gx = datadocs.gx_pages(RunFolder(XSS_KEY))[0]["url"]
    return [
        ("/", AUTH, 200),
        ("/page.json", AUTH, 200),
        (f"/data-docs/{XSS_KEY}/", AUTH, 200),
        (f"/data-docs/{XSS_KEY}/{gx}", AUTH, 200),
        (f"/data-docs/{XSS_KEY}/static/styles/data_docs_default_styles.css", AUTH, 200),
        (f"/data-docs/{XSS_KEY}", AUTH, 307),
        (f"/plots/{run_id}/plots/none.png", AUTH, 404),
        ("/?model=nope", AUTH, 404),
        ("/no-such-route", AUTH, 404),
        ("/", {"accept": "text/html"}, 303),
        ("/page.json", {}, 401),
    ]


def test_every_route_carries_the_security_headers(store, page):
    client = _client()
    for path, headers, status in _routes(page):
        response = client.get(path, headers=headers)
        assert response.status_code == status, path
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'none'" in csp and "default-src 'none'" in csp, path
        assert "frame-ancestors 'self'" in csp, path
        assert response.headers.get("x-content-type-options") == "nosniff", path


@pytest.mark.parametrize(
    "path, message",
    [
        ("/plots/0123456789abcdef0123456789abcdef/plots/x.png", "no such run"),
        ("/plots/not-a-run/plots/x.png", "no such run"),
        ("/data-docs/no-such-run/", "no such run"),
        ("/data-docs/no-such-run/validations/x.html", "no Data Docs file"),
    ],
)
def test_unknown_plots_and_runs_are_404_with_a_message(store, path, message):
    response = _client().get(path, headers=AUTH)
    assert response.status_code == 404
    assert message in response.json()["detail"]


def test_plot_route_serves_only_logged_png_plots(store, page, tmp_path):
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient

    run_id = page["latest"]["rows"][0]["run_id"]
    with pytest.raises(ui.PageError, match="has no plot 'split.json'"):
        ui_app.plot_bytes(run_id, "split.json")
    with pytest.raises(ui.PageError, match="no such run"):
        ui_app.plot_bytes("../x", "plots/drawn.png")
    Figure(figsize=(1, 1)).savefig(tmp_path / "drawn.png")  # a model's own figure
    MlflowClient().log_artifact(run_id, str(tmp_path / "drawn.png"), "plots")
    png = _client().get(f"/plots/{run_id}/plots/drawn.png", headers=AUTH)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_an_unexpected_error_is_a_plain_500_with_headers(store, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(ui_app, "build_page", broken)
    response = _client().get("/page.json", headers=AUTH)
    assert response.status_code == 500
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_page_json_is_plain_json(store):
    data = _client().get("/page.json", headers=AUTH).json()
    assert json.loads(json.dumps(data)) == data


def test_the_page_reads_the_folder_the_pipeline_wrote(store, page):
    folder = RunFolder(RUN_2)
    assert folder.path.parent == config.runs_root() and folder.exists()
    assert page["latest"]["decision"] == words.describe_decision(folder.read_json("decision.json"))


def test_empty_stores_render_a_page_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.delenv("RECSYS_MODEL_NAME", raising=False)
    page = ui.build_page(root=tmp_path / "no-runs")
    assert (page["champion"], page["challenger"], page["latest"], page["history"]) == (
        None,
        None,
        None,
        [],
    )
    assert page["validations"] == []
    assert [m["name"] for m in page["models"]] == ["recsys"]
    html = render.render_page(page)
    assert "No version holds the champion alias yet" in html and "No challenger" in html


@pytest.mark.parametrize(
    "value, text",
    [(0.123456, "0.1235"), (66.0, "66"), (None, "—"), ("0.5", "0.5000"), ("none", "none")],
)
def test_format_number(value, text):
    assert words.format_number(value) == text


@pytest.mark.parametrize(
    "name, label",
    [
        ("ndcg@10", "NDCG@10"),
        ("hit_rate@5", "hit rate@5"),
        ("fairness_gap.ndcg@10", "fairness gap (NDCG@10)"),
        ("gap.age_band.ndcg@10", "gap age band (NDCG@10)"),
        ("slice.activity.cold.ndcg@10", "activity: cold"),
        ("long_tail_share", "long-tail share"),
    ],
)
def test_metric_label(name, label):
    assert words.metric_label(name) == label
