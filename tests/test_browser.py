"""The Recommender page in a real Airflow API server, seen through headless Chromium.

The server runs as its own process group on a free port, with SQLite metadata,
the project's plugins/ folder and SimpleAuthManager holding one known user.
A pipeline run (in-process, two fast models) fills MLflow and the run folder
while the server starts. The browser logs in through Airflow's own login page,
opens the page, checks champion, leaderboard and validation status, and saves
screenshots to ``$RECSYS_SCREENSHOTS`` (default ``<RECSYS_HOME>/screenshots``).
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


def _run_pipeline(env: dict[str, str], data_dir: Path) -> None:
    """One training run in this process, against the server's stores."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline

    keys = ("RECSYS_HOME", "MLFLOW_TRACKING_URI", "RECSYS_ARTIFACT_ROOT")
    with pytest.MonkeyPatch.context() as mp:
        for key in keys:
            mp.setenv(key, env[key])
        path = write_dataset(generate_dataset(120, 60, 3000, seed=5), data_dir)
        run_pipeline(PipelineOptions(data_path=str(path), models=MODELS, k=5), "browser-run-1")


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
        _run_pipeline(env, tmp_path / "data")
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/api/v2/monitor/health", server, log, timeout=120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                _check_page(browser.new_page(viewport={"width": 1280, "height": 900}), base)
            finally:
                browser.close()
    finally:
        _stop(server)


def _check_page(page, base: str) -> None:
    """Log in via the redirect, check the page, then the same page framed in Airflow's UI."""
    page.goto(f"{base}/recsys/")
    assert "/auth/login" in page.url, "an anonymous visitor must be sent to Airflow's login"
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/recsys/", timeout=30_000)

    champion = page.locator("#champion").inner_text()
    assert "recsys v1" in champion and "promote" in champion
    board = page.locator("#leaderboard-table").inner_text()
    for model in MODELS:
        assert model in board
    validation = page.locator("#validation-table").inner_text()
    assert "browser-run-1" in validation and "passed" in validation
    assert "interactions: pass" in validation
    assert page.locator("#history svg").count() == 1

    folder = _screenshot_dir()
    page.screenshot(path=str(folder / "recommender-page.png"), full_page=True)

    page.goto(f"{base}/plugin/recommender")
    page.get_by_role("link", name="Recommender").or_(
        page.get_by_text("Recomm", exact=False)
    ).first.wait_for(timeout=30_000)
    frame = page.frame_locator("iframe")
    frame.locator("#leaderboard-table").wait_for(timeout=30_000)
    page.screenshot(path=str(folder / "recommender.png"))
    shutil.copyfile(folder / "recommender.png", LEAD_COPY)
