"""The Recommender page in a real Airflow API server, seen through headless Chromium.

The server runs as its own process group on a free port, with SQLite metadata,
the project's plugins/ folder and SimpleAuthManager holding one known user.
While the server starts, pipeline runs (in-process, two fast models) fill
MLflow and the run folders: two runs of ``recsys`` (a champion, then a held
challenger), one of a second registered model ``recsys-other``, and a batch
whose user id and rating are markup, rejected by validation. The browser
runs offline (every request that leaves the server is refused and recorded),
logs in through Airflow's own login page, checks the champion, challenger,
worded decisions, column order and charts, switches models with the picker,
opens the malicious batch's Data Docs (a ``dialog`` handler proves nothing
ran), checks a 404 and the page framed in Airflow's UI, and saves screenshots
to ``$RECSYS_SCREENSHOTS`` (default ``<RECSYS_HOME>/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER, PASSWORD = "operator", "recsys-test-password"
MODELS = ("popularity", "itemknn")
LEAD_COPY = Path("/tmp/recsys-recommender.png")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(tmp: Path, port: int) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp / "no-dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "recsys-browser-test",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
            "RECSYS_HOME": str(tmp / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "RECSYS_ARTIFACT_ROOT": (tmp / "artifacts").as_uri(),
            "MLFLOW_UI_URL": "http://localhost:5000",
        }
    )
    (tmp / "no-dags").mkdir(parents=True, exist_ok=True)
    (tmp / "passwords.json").write_text(f'{{"{USER}": "{PASSWORD}"}}\n')
    return env


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"api-server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"api-server not up after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


OTHER_MODEL = "recsys-other"
EVIL_ID = "<img src=x onerror=alert(1)>"
EVIL_RATING = "<script>alert(2)</script>"


def _run_pipelines(env: dict[str, str], data_dir: Path) -> None:
    """Two runs of ``recsys``, one of ``recsys-other`` and a malicious rejected batch,
    in this process, against the server's stores."""
    import pandas as pd

    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.data.validation import DataValidationError
    from recsys.pipeline import PipelineOptions, run_pipeline, validate_data

    keys = ("RECSYS_HOME", "MLFLOW_TRACKING_URI", "RECSYS_ARTIFACT_ROOT")
    with pytest.MonkeyPatch.context() as mp:
        for key in keys:
            mp.setenv(key, env[key])
        mp.delenv("RECSYS_MODEL_NAME", raising=False)
        path = write_dataset(generate_dataset(120, 60, 3000, seed=5), data_dir / "main")
        mp.setenv("RECSYS_DATA_PATH", str(path))  # the deployment's data: model "recsys"
        for run_key in ("browser-run-1", "browser-run-2"):
            run_pipeline(PipelineOptions(data_path=str(path), models=MODELS, k=5), run_key)
        other = write_dataset(generate_dataset(100, 50, 2500, seed=8), data_dir / "other")
        options = PipelineOptions(data_path=str(other), models=MODELS, k=5, model_name=OTHER_MODEL)
        run_pipeline(options, "other-run-1")
        rows = [
            {"user_id": str(u), "item_id": str(i), "rating": "4", "timestamp": 1000 + u + i}
            for u in range(5)
            for i in range(5)
        ]
        rows += [{"user_id": EVIL_ID, "item_id": "1", "rating": "4", "timestamp": 5}] * 3
        rows[1]["rating"] = EVIL_RATING
        pd.DataFrame(rows).to_csv(data_dir / "xss.csv", index=False)
        with pytest.raises(DataValidationError):
            validate_data("xss-batch", str(data_dir / "xss.csv"), data_format="csv")


def _screenshot_dir() -> Path:
    default = Path(os.environ.get("RECSYS_HOME", ROOT / "var")) / "screenshots"
    folder = Path(os.environ.get("RECSYS_SCREENSHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(.ci/run installs it: apt-get install chromium)",
)
def test_recommender_page_behind_airflow_login(tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = _server_env(tmp_path, port)
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrated = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    log = tmp_path / "api-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [airflow, "api-server", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _run_pipelines(env, tmp_path / "data")
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/api/v2/monitor/health", server, log, timeout=120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                tried = _offline(context, base)
                _check_page(context, base)
                assert tried == [], f"the page reached outside the server: {tried}"
            finally:
                browser.close()
    finally:
        _stop(server)


def _offline(context, base: str) -> list[str]:
    """Refuse every request that leaves the server; the list collects what was tried."""
    tried: list[str] = []

    def route(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            tried.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return tried


def _check_page(context, base: str) -> None:
    """Log in via the redirect, check the page, the picker, the Data Docs, then the framed page."""
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    page.goto(f"{base}/recsys/")
    assert "/auth/login" in page.url, "an anonymous visitor must be sent to Airflow's login"
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/recsys/", timeout=30_000)
    response = page.reload()
    assert "script-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"

    champion = page.locator("#champion-card").inner_text()
    assert "recsys v1" in champion
    assert "First champion: version 1 had no earlier model to compare with" in champion
    assert "Load check: passed" in champion
    challenger = page.locator("#challenger-card").inner_text()
    assert "recsys v2" in challenger and "Held: version 2 did not beat version 1" in challenger
    headers = page.locator("#leaderboard-table thead th").all_inner_texts()
    assert headers[:8] == [
        "model",
        "role",
        "NDCG@5",
        "precision@5",
        "recall@5",
        "MAP@5",
        "hit rate@5",
        "MRR@5",
    ]
    board = page.locator("#leaderboard-table").inner_text()
    assert "champion v1" in board and all(model in board for model in MODELS)
    assert "browser-run-2" in page.locator("#leaderboard").inner_text()
    assert "other-run-1" not in page.content()
    validation = page.locator("#validation-table").inner_text()
    assert "browser-run-1" in validation and "rejected batch" in validation
    assert page.locator("#metrics-chart svg").count() == 1
    assert page.locator("#slices-chart svg").count() == 1
    assert page.locator("#history svg").count() == 1

    folder = _screenshot_dir()
    page.screenshot(path=str(folder / "recommender-page.png"), full_page=True)

    page.select_option("select#model", OTHER_MODEL)
    page.click(".picker button[type=submit]")
    page.wait_for_url(f"**/recsys/?model={OTHER_MODEL}")
    assert "other-run-1" in page.locator("#leaderboard").inner_text()
    assert "browser-run" not in page.locator("#leaderboard").inner_text()
    assert f"{OTHER_MODEL} v1" in page.locator("#champion-card").inner_text()
    page.screenshot(path=str(folder / "recommender-other-model.png"), full_page=True)
    page.locator('#model-links a[href="?model=recsys"]').click()
    page.wait_for_url("**/recsys/?model=recsys")
    assert "browser-run-2" in page.locator("#leaderboard").inner_text()
    page.locator("#validation-table tr", has_text="xss-batch").get_by_role("link").click()
    page.wait_for_url("**/data-docs/xss-batch/")
    report = page.locator("body").inner_text()
    assert EVIL_RATING in report and f"user_id={EVIL_ID}" in report
    page.screenshot(path=str(folder / "data-docs-report.png"), full_page=True)
    with page.expect_navigation() as navigation:
        page.get_by_role("link", name="validation of interactions").click()
    assert "sandbox" in navigation.value.headers["content-security-policy"]
    gx = page.locator("body").inner_text()
    assert EVIL_RATING in gx and EVIL_ID in gx and "Unsuccessful Expectations" in gx
    page.screenshot(path=str(folder / "data-docs-gx-page.png"), full_page=True)
    assert page.locator("img").count() == 0 and page.locator("script").count() == 0
    assert dialogs == [], f"markup from the batch ran: {dialogs}"
    assert violations == [], f"the page tried something its policy forbids: {violations}"

    missing = page.goto(f"{base}/recsys/plots/{'0' * 32}/plots/x.png")
    assert missing.status == 404 and "no such run" in page.content()
    assert "script-src 'none'" in missing.headers["content-security-policy"]

    page.goto(f"{base}/plugin/recommender")
    page.get_by_role("link", name="Recommender").or_(
        page.get_by_text("Recomm", exact=False)
    ).first.wait_for(timeout=30_000)
    frame = page.frame_locator("iframe")
    frame.locator("#leaderboard-table").wait_for(timeout=30_000)
    page.screenshot(path=str(folder / "recommender.png"))
    shutil.copyfile(folder / "recommender.png", LEAD_COPY)
