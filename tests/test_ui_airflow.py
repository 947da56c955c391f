"""``make ui`` as a user takes it: a whole local Airflow, driven through its own UI.

The module runs the README's commands verbatim (``make demo``, ``make ui``,
``make ui-stop``) from the checkout, with free ports and throw-away homes
passed through the environment, so it never touches the developer's ``var/``
or ``mlruns/``. The servers are shared by the tests below (module fixture):

1. headless Chromium signs in through Airflow's login form, sees the demo's
   run, triggers ``recsys_training`` from the trigger form with non-default
   params (two fast models, a freshly generated data set), and waits until the
   run page shows it succeeded (the REST API is the backup check);
2. the schedules work under the scheduler: the cron runs fired at start, and a
   batch dropped into the landing folder, once ``recsys_ingest`` accepted it,
   starts ``recsys_monitor`` through the ``recsys_interactions`` Asset, whose
   retraining decision (every popularity change counts, here) starts
   ``recsys_training`` through the ``recsys_retrain`` Asset;
3. ``make ui-stop`` leaves no process behind.

``RECSYS_MIN_NEW_INTERACTIONS=1`` keeps the automatic runs cheap: with no new
rows since the champion they check the data and skip the rest. The trigger
form sets it back to 0 for the run it starts. Screenshots go to
``$RECSYS_SCREENSHOTS`` (default: this module's temporary folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

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
#: The trigger form's choice; the DAG's default is six models.
MODELS = ["popularity", "itemknn"]
DEFAULT_MODELS = ["popularity", "itemknn", "als", "ease", "content", "ranker"]
#: Settings of the test process (tests/conftest.py) and of an outer `make`
#: that must not reach the stack: the Makefile derives its own.
PRIVATE = ("AIRFLOW", "MLFLOW_", "RECSYS_", "DEMO_", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalStack:
    """The servers `make ui` started, and what a user knows about them."""

    env: dict[str, str]
    home: Path
    data: Path
    base: str
    started_output: str
    screenshots: Path

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def make(self, target: str, timeout: float = 420) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", target],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def password(self) -> str:
        return json.loads(
            (self.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
        )["admin"]

    def api(self, path: str, body: dict | None = None) -> dict:
        """One call to Airflow's REST API v2 as the admin user."""
        token = _post_json(
            f"{self.base}/auth/token", {"username": "admin", "password": self.password()}
        )["access_token"]
        request = urllib.request.Request(
            f"{self.base}/api/v2/{path}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def runs(self, dag_id: str) -> list[dict]:
        return self.api(f"dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api(f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.api(
            f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=100"
        )["task_instances"]
        return {
            t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t["state"]
            for t in tis
        }

    def logs(self, lines: int = 25) -> str:
        out = []
        for log in sorted((self.home / "ui").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"----- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _stack_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE)}
    env.update(
        {
            "RECSYS_HOME": str(tmp / "home"),
            "RECSYS_MLRUNS": str(tmp / "mlruns"),
            "AIRFLOW_PORT": str(_free_port()),
            "MLFLOW_PORT": str(_free_port()),
            "DEMO_USERS": "200",
            "DEMO_ITEMS": "100",
            "DEMO_INTERACTIONS": "5000",
            "RECSYS_MIN_NEW_INTERACTIONS": "1",
            # Any popularity change at all asks for retraining, so the landed batch
            # (rows the champion already has) carries on from recsys_monitor to training.
            "RECSYS_MONITOR_ITEM_PSI": "0",
            # The code under test is this checkout's, even where the virtual
            # environment's editable install points at another worktree.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> LocalStack:
    tmp = tmp_path_factory.mktemp("ui-airflow")
    screenshots = Path(os.environ.get("RECSYS_SCREENSHOTS", tmp / "screenshots"))
    screenshots.mkdir(parents=True, exist_ok=True)
    env = _stack_env(tmp)
    stack = LocalStack(
        env,
        tmp / "home",
        tmp / "trigger-data",
        f"http://127.0.0.1:{env['AIRFLOW_PORT']}",
        "",
        screenshots,
    )
    demo = stack.make("demo", timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "the DAG run succeeded" in demo.stdout
    # The user watches each task start and end with its time, then reads the
    # gate's verdict and what to do next; the log they may open has no errors.
    assert re.search(r"▶ validate\n.*✓ validate success in \d+\.\ds", demo.stdout, re.S)
    assert "✓ promote success in" in demo.stdout
    assert "gate: version 1 promoted" in demo.stdout and "next: make ui" in demo.stdout
    demo_log = Path(re.search(r"Airflow's log: (\S+)\)", demo.stdout).group(1)).read_text()
    assert "XCom not found" not in demo_log and "Traceback" not in demo_log
    generate = subprocess.run(
        [
            str(Path(sys.executable).with_name("recsys")),
            "generate",
            "--users",
            "200",
            "--items",
            "100",
            "--interactions",
            "5000",
            "--seed",
            "7",
            "--out",
            str(stack.data),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generate.returncode == 0, generate.stderr
    try:
        up = stack.make("ui")
        assert up.returncode == 0, up.stdout + up.stderr + stack.logs()
        stack.started_output = up.stdout
        yield stack
    finally:
        stack.make("ui-stop", timeout=120)


def test_make_ui_says_where_to_go_and_starts_only_once(stack):
    out = stack.started_output
    assert f"{stack.base}/plugin/recommender" in out
    assert (
        "sign in as        admin, password in "
        + str(stack.airflow_home / "simple_auth_manager_passwords.json.generated")
        in out
    )
    assert f"{stack.home / 'ui'}/<server>.log" in out and "make ui-stop" in out
    health = json.loads(urllib.request.urlopen(f"{stack.base}/api/v2/monitor/health").read())
    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[part]["status"] == "healthy", health
    pids = {p.stem: p.read_text() for p in (stack.home / "ui").glob("*.pid")}
    again = stack.make("ui", timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert {p.stem: p.read_text() for p in (stack.home / "ui").glob("*.pid")} == pids
    dags = {d["dag_id"]: d for d in stack.api("dags")["dags"]}
    assert not dags["recsys_training"]["is_paused"] and not dags["recsys_ingest"]["is_paused"]


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(.ci/run installs it: apt-get install chromium)",
)
def test_a_run_triggered_from_the_form_succeeds_in_the_grid(stack):
    from playwright.sync_api import sync_playwright

    demo_run = next(r for r in stack.runs("recsys_training") if r["run_type"] == "manual")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            _sign_in(page, stack)
            _see_run_succeeded(page, stack, demo_run["dag_run_id"], timeout=180)
            run_id = _trigger_from_the_form(page, stack)
            _see_run_succeeded(page, stack, run_id, timeout=420)
            _check_task_rows(page)
            page.screenshot(path=str(stack.screenshots / "run-success.png"))
            _see_in_the_grid(page, stack, run_id)
            page.goto(f"{stack.base}/plugin/recommender")
            board = page.frame_locator("iframe").locator("#leaderboard-table")
            board.wait_for(timeout=60_000)
            assert all(model in board.inner_text() for model in MODELS)
            page.screenshot(path=str(stack.screenshots / "recommender-after-ui-run.png"))
        finally:
            browser.close()
    conf = stack.run("recsys_training", run_id)["conf"]
    assert conf["models"] == MODELS and conf["data_path"] == str(stack.data)
    assert conf["min_new_interactions"] == 0


def _sign_in(page, stack: LocalStack) -> None:
    """Open the DAG as a stranger: Airflow's login form, then the DAG page."""
    page.goto(f"{stack.base}/dags/recsys_training")
    page.wait_for_url(re.compile(r".*/auth/login.*"), timeout=30_000)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", stack.password())
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dags/recsys_training$"), timeout=30_000)


def _trigger_from_the_form(page, stack: LocalStack) -> str:
    """Fill the trigger form with non-default params, submit; returns the new run's id."""
    page.goto(f"{stack.base}/dags/recsys_training")
    page.set_viewport_size({"width": 1280, "height": 2300})  # the whole form in one picture
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    data_path = form.locator("#element_data_path")
    data_path.wait_for(timeout=30_000)
    chosen = form.locator("input[name=element_models]")
    assert [c.get_attribute("value") for c in chosen.all()] == DEFAULT_MODELS
    assert "*" not in form.locator("label", has_text="Data path").inner_text(), (
        "an empty data path means the default: the form must not mark it required"
    )
    assert "*" in form.locator("label", has_text="Models").inner_text()
    form.screenshot(path=str(stack.screenshots / "trigger-form-defaults.png"))

    data_path.fill(str(stack.data))
    models = form.get_by_role("combobox", name="Select one or multiple values")
    models.click()
    for _ in DEFAULT_MODELS:
        models.press("Backspace")
    for model in MODELS:
        models.fill(model)
        models.press("Enter")
    models.click()
    form.get_by_text("attention (").wait_for()  # every model is offered
    form.screenshot(path=str(stack.screenshots / "trigger-form-models.png"))
    form.get_by_text("Trigger Dag - recsys_training").click()  # closes the menu
    assert [c.get_attribute("value") for c in chosen.all()] == MODELS
    form.get_by_role("spinbutton", name="Minimum new interactions").fill("0")
    form.screenshot(path=str(stack.screenshots / "trigger-form-filled.png"))
    form.get_by_role("button", name="Trigger", exact=True).click()

    page.wait_for_url(re.compile(r".*/dags/recsys_training/runs/[^/]+/?$"), timeout=30_000)
    page.set_viewport_size({"width": 1280, "height": 900})
    return urllib.parse.unquote(page.url.rstrip("/").rsplit("/", 1)[1])


def _see_run_succeeded(page, stack: LocalStack, run_id: str, timeout: float) -> None:
    """Wait on the run's page (grid beside it) until its state badge says Success.

    The REST API is polled alongside: a failed run ends the wait at once, with
    its task states and the servers' logs.
    """
    path = f"{stack.base}/dags/recsys_training/runs/{urllib.parse.quote(run_id, safe='')}"
    if not page.url.startswith(path):
        page.goto(path)
    badge = (
        page.get_by_role("heading", name=run_id)
        .locator("xpath=..")
        .locator("[data-testid=state-badge]")
    )
    deadline = time.monotonic() + timeout
    seen: object = None  # what the badge showed last (or why it could not be read)
    while time.monotonic() < deadline:
        state = stack.run("recsys_training", run_id)["state"]
        if state == "failed":
            pytest.fail(
                f"run {run_id} failed: {stack.task_states('recsys_training', run_id)}"
                f"\n{stack.logs()}"
            )
        try:
            seen = badge.inner_text(timeout=10_000).strip()
        except Exception as exc:  # not rendered yet; a loaded machine can take a while
            seen = exc
        if seen == "Success":
            return
        if state == "success":
            page.reload()  # the API says done: the page must say so after a reload
        time.sleep(3)
    page.screenshot(path=str(stack.screenshots / "run-timeout.png"))
    pytest.fail(
        f"run {run_id} not shown as succeeded after {timeout:.0f}s (API: {state}; "
        f"the badge: {seen!r}); tasks: {stack.task_states('recsys_training', run_id)}"
    )


def _see_in_the_grid(page, stack: LocalStack, run_id: str) -> None:
    """The DAG's grid, details folded away so every run's column is on screen."""
    page.goto(f"{stack.base}/dags/recsys_training")
    cell = page.locator(f"[id='grid-{run_id}-recommend']")
    cell.wait_for(timeout=30_000)
    page.get_by_role("button", name="Collapse Details Panel").click()
    page.wait_for_function(
        "id => { const r = document.getElementById(id).getBoundingClientRect();"
        " return r.right <= window.innerWidth; }",
        arg=f"grid-{run_id}-recommend",
    )
    page.screenshot(path=str(stack.screenshots / "grid-success.png"))


def _check_task_rows(page) -> None:
    """The chosen models trained; the others were skipped.

    The task table polls on its own schedule: on a busy machine the run's badge
    can turn to Success while the table still shows its last poll (the final
    task ``Running``), so the rows are read again after a reload before failing.
    """
    expected = {
        **dict.fromkeys(
            ("train_popularity", "train_itemknn", "evaluate", "promote", "recommend"), "Success"
        ),
        **dict.fromkeys(("train_als", "train_ease", "train_content", "train_ranker"), "Skipped"),
    }

    def states() -> dict[str, str]:
        shown = {}
        for task_id in expected:
            row = page.locator("tr", has=page.get_by_role("link", name=task_id, exact=True))
            shown[task_id] = row.locator("[data-testid=state-badge]").inner_text().strip()
        return shown

    shown = first = states()
    if shown != expected:
        page.reload()
        # The task table's link (the grid names each task too).
        table = page.get_by_test_id("table-list")
        table.get_by_role("link", name="recommend", exact=True).wait_for(timeout=30_000)
        shown = states()
    assert shown == expected, f"before the reload: {first}"


def test_the_cron_and_the_ingest_asset_start_runs(stack):
    for dag in ("recsys_ingest", "recsys_training"):
        ticks = _wait_for(
            lambda dag=dag: _finished(stack, dag, "scheduled"), 180, f"a finished cron run of {dag}"
        )
        assert {r["state"] for r in ticks} == {"success"}, ticks
    landing = stack.home / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    _land_batch(stack.data / "interactions.parquet", landing / "batch-001.csv")
    before = {r["dag_run_id"] for r in stack.runs("recsys_training")}
    ingest = stack.api("dags/recsys_ingest/dagRuns", {"logical_date": None})["dag_run_id"]
    deadline = time.monotonic() + 300
    while True:
        ingested = stack.run("recsys_ingest", ingest)["state"]
        monitored = [r for r in stack.runs("recsys_monitor") if r["run_type"] == "asset_triggered"]
        follow_ups = [
            r
            for r in stack.runs("recsys_training")
            if r["run_type"] == "asset_triggered" and r["dag_run_id"] not in before
        ]
        if ingested == "success" and follow_ups and follow_ups[0]["state"] == "success":
            break
        assert ingested != "failed", stack.task_states("recsys_ingest", ingest)
        assert not monitored or monitored[0]["state"] != "failed", monitored
        assert not follow_ups or follow_ups[0]["state"] != "failed", follow_ups
        assert time.monotonic() < deadline, f"ingest {ingested}, follow-ups {follow_ups}"
        time.sleep(3)
    assert stack.task_states("recsys_ingest", ingest)["publish"] == "success"
    monitor = monitored[0]["dag_run_id"]
    assert stack.task_states("recsys_monitor", monitor)["request_training"] == "success"
    assert len(list((landing / "_ingested").glob("*/batch-001.csv"))) == 1


def _finished(stack: LocalStack, dag_id: str, run_type: str) -> list[dict] | None:
    """The runs of that type once there is one and none is still going."""
    runs = [r for r in stack.runs(dag_id) if r["run_type"] == run_type]
    done = runs and all(r["state"] in ("success", "failed") for r in runs)
    return runs if done else None


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(3)
    return value


def _land_batch(source: Path, target: Path) -> None:
    """A small batch of interactions, written aside and renamed in (ingest skips dot files),
    then marked complete with ``<name>.done`` so ingest need not wait out its settle window."""
    import pandas as pd

    batch = pd.read_parquet(source).head(300)
    partial = target.with_name(f".{target.name}.partial")
    batch.to_csv(partial, index=False)
    partial.rename(target)
    target.with_name(f"{target.name}.done").touch()


def test_ui_stop_ends_every_process(stack):
    sessions = {int(p.read_text().split()[0]) for p in (stack.home / "ui").glob("*.pid")}
    assert len(sessions) == 5, "api-server, scheduler, dag-processor, triggerer and mlflow"
    members = _in_sessions(sessions)
    assert len(members) > len(sessions), "the servers run workers of their own"

    stopped = stack.make("ui-stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the local Airflow" in stopped.stdout
    _, alive = psutil.wait_procs(members, timeout=5)
    assert not [p for p in alive if _running(p)], alive
    assert not _in_sessions(sessions)
    assert not list((stack.home / "ui").glob("*.pid"))
    for port in (stack.env["AIRFLOW_PORT"], stack.env["MLFLOW_PORT"]):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still answers"
    assert "was not running" in stack.make("ui-stop", timeout=60).stdout


def _running(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE
    return False


def _in_sessions(sessions: set[int]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found
