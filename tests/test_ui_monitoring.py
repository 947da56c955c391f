"""The Recommender page's drift and decay section, from monitoring records written by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys.pipeline.monitor import MonitorLog
from recsys.promotion.retrain import RetrainPolicy, decide_retraining
from recsys.ui import charts, monitoring, render
from recsys.ui import page as ui

T0 = 1_800_000_000.0
QUIET = {
    "item_psi": 0.02,
    "item_js": 0.3,
    "activity_ks": 0.05,
    "unknown_user_share": 0.01,
    "unknown_item_share": 0.0,
    "rating_js": 0.03,
    "hit_rate@10": 0.3,
    "ndcg@10": 0.1,
    "hit_rate_drop": 0.02,
    "ndcg_drop": -0.01,
}


@pytest.fixture
def records(tmp_path, monkeypatch, isolated_mlflow):
    """Six batches against champion v1 (the fifth a popularity shift, retrained), two against v2."""
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECSYS_MODEL_NAME", raising=False)
    log = MonitorLog("recsys")
    last = None
    figures = [QUIET] * 4 + [{**QUIET, "item_psi": 0.41, "hit_rate_drop": 0.45}, QUIET]
    for i, metrics in enumerate(figures + [QUIET, {**QUIET, "unknown_item_share": 0.3}]):
        version = 1 if i < 6 else 2
        at = T0 + i * 3600
        log.add_measurement(
            {
                "batch": f"b{i}",
                "source": f"batch-{i}.csv",
                "arrival": "2026-11-01",
                "rows": 500,
                "champion_version": version,
                "measured_at": at,
                "k": 10,
                "metrics": metrics,
            }
        )
        decision = decide_retraining(
            metrics,
            RetrainPolicy(),
            now=at,
            last_retrain_at=last,
            has_champion=True,
            changed=True,
            batch=f"b{i}",
            champion_version=version,
        )
        last = at if decision.retrain else last
        log.add_decision(decision.to_dict())
    return log


def test_the_view_has_one_point_per_batch_with_its_decision_and_the_thresholds(records):
    view = monitoring.monitoring_view("recsys")
    assert [p["action"] for p in view["points"]] == ["hold"] * 4 + ["retrain"] + ["hold"] * 2 + [
        "defer"
    ]
    assert [p["champion_version"] for p in view["points"]] == [1] * 6 + [2] * 2
    assert view["thresholds"]["item_psi"] == 0.2 and view["thresholds"]["cooldown_hours"] == 6
    assert view["decisions"][0]["batch"] == "batch-7.csv"  # latest first, by its file name
    assert view["decisions"][0]["action"] == "defer"
    assert view["actions"] == {"hold": 6, "retrain": 1, "defer": 1}


def test_no_records_no_section_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "empty"))
    assert monitoring.monitoring_view("recsys") is None
    assert charts.drift_chart([], {}, monitoring.PANELS) is None


def test_the_drift_chart_draws_every_figure_with_its_threshold(records):
    view = monitoring.monitoring_view("recsys")
    svg = charts.drift_chart(view["points"], view["thresholds"], monitoring.PANELS)
    assert svg.startswith("<svg")
    for _, title, kind in monitoring.PANELS:
        assert f"{title} ({kind})".replace("'", "&#39;") in svg or f"{title} ({kind})" in svg
    for limit in ("0.2", "0.3", "0.5", "0.1", "0.15"):
        assert f"threshold {limit}" in svg
    assert "champion v2" in svg
    assert "decision: retrain" in svg and "decision: defer" in svg and "past its threshold" in svg
    assert "decision: skip" not in svg  # no batch was skipped: no legend entry for it


def test_the_page_shows_the_chart_and_the_decisions_in_words(records):
    data = ui.build_page()
    html = render.render_page(data)
    assert 'id="monitoring"' in html and 'id="drift-chart"' in html
    assert "item popularity PSI 0.410 &gt; 0.2" in html
    assert "retraining was triggered 3.0 h ago (cooldown 6 h)" in html
    assert "retrain: 1" in html and "defer: 1" in html


def test_the_page_says_when_nothing_was_measured(tmp_path, monkeypatch, isolated_mlflow):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "nothing"))
    html = render.render_page(ui.build_page())
    assert "No batch of recsys has been measured yet" in html


@pytest.mark.browser
def test_the_drift_chart_renders_in_chromium(records, tmp_path):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    html = tmp_path / "page.html"
    html.write_text(render.render_page(ui.build_page()))
    folder = Path(os.environ.get("RECSYS_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
        )
        page.goto(html.as_uri())
        chart = page.locator("#drift-chart svg")
        box = chart.bounding_box()
        page.locator("#monitoring").screenshot(path=str(folder / "drift-and-decay.png"))
        rows = page.locator("#decisions-table tbody tr").count()
        browser.close()
    assert box and box["width"] > 600 and box["height"] > 400
    assert rows == 8
    assert (folder / "drift-and-decay.png").stat().st_size > 10_000
