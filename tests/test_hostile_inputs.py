"""Hostile inputs (issue 14): each is refused cleanly, before any work, and nothing leaks.

- Every bad option of ``recsys train`` / ``recsys benchmark`` (through the real
  command) and every bad param of the ``recsys_training`` DAG (at trigger, by
  the params schema, and at its first task, by the same rules) fails with a
  message naming the flag or param, before a run folder, an MLflow run or a
  registered version exists.
- The Recommender page, served by a real server and read by a real HTTP
  client, never answers with live markup for a batch whose user id is
  ``<img src=x onerror=alert(1)>`` and whose rating is ``<script>...``, and
  every response carries the Content-Security-Policy; an unknown run's plot is
  a 404.
- With ``RECSYS_PSEUDONYM_KEY`` set, a failing batch's Data Docs, report, log
  lines and quarantine hold pseudonyms only; turning the key on in an existing
  deployment makes the next run replace the old champion as incomparable,
  saying why.
- Commands that read the registry never create a missing store and never hang
  on a dead server; the compose file and ``make ui`` bind and check what they say.
"""

from __future__ import annotations

import html.parser
import importlib.util
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recsys import options
from recsys.cli import main
from recsys.data.validation import DataValidationError
from recsys.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EVIL_ID = "<img src=x onerror=alert(1)>"
EVIL_RATING = "<script>alert(2)</script>"
RAW_ID = "alice-raw-7"
KEY = "hostile-test-key"


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset

    return write_dataset(
        generate_dataset(60, 30, 900, seed=2), tmp_path_factory.mktemp("tiny") / "d"
    )


@pytest.fixture
def home(tmp_path, monkeypatch, isolated_mlflow) -> Path:
    """A fresh RECSYS_HOME and MLflow store; no pseudonym key."""
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    return tmp_path


def _mlflow_counts(tmp: Path) -> tuple[int, int]:
    """(runs, registered versions) in the test's MLflow store; (0, 0) when it does not exist."""
    db = tmp / "mlflow.db"
    if not db.exists():
        return 0, 0
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        versions = (
            con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
            if "model_versions" in tables
            else 0
        )
    return runs, versions


def _nothing_started(tmp: Path) -> None:
    assert _mlflow_counts(tmp) == (0, 0)
    runs = tmp / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"recsys {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------- recsys train flags
#: (flags, the message's start after "error: "): each fails before any work.
TRAIN_CASES = [
    (["--rerank-strength", "5"], "--rerank-strength must lie in [0, 1]"),
    (["--rerank-strength", "-0.1"], "--rerank-strength must lie in [0, 1]"),
    (["--rerank-strength", "nan"], "--rerank-strength must be a finite number"),
    (["--k", "0"], "--k must lie in [1, 200]"),
    (["--k", "-3"], "--k must lie in [1, 200]"),
    (["--k", "201"], "--k must lie in [1, 200]"),
    (["--margin", "-1"], "--margin must be at least 0"),
    (["--margin", "inf"], "--margin must be a finite number"),
    (["--margin", "nan"], "--margin must be a finite number"),
    (["--models", ""], "--models must name at least one model"),
    (["--models", " , ,"], "--models must name at least one model"),
    (["--models", "nosuch"], "--models names unknown model 'nosuch'"),
    (["--models", "popularity,Popularity"], "--models names unknown model 'Popularity'"),
    (["--models", "popularity,popularity"], "--models names popularity more than once"),
    (["--model-name", "a/b"], "--model-name is not a valid name"),
    (["--model-name", "x@champion"], "--model-name is not a valid name"),
    (["--model-name", " "], "--model-name must be a non-empty text"),
    (["--run-key", ".."], "--run-key is not a valid name"),
    (["--run-key", "../escape"], "--run-key is not a valid name"),
    (["--format", "xlsx"], "--format must be one of"),
]


@pytest.mark.parametrize(("flags", "message"), TRAIN_CASES, ids=lambda v: " ".join(v))
def test_a_bad_train_flag_fails_before_any_work_and_names_the_flag(
    tiny, home, capsys, flags, message
):
    assert main(["train", str(tiny), "--models", "popularity", *flags]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert line.removeprefix("recsys train: error: ").startswith(message), line
    _nothing_started(home)


def test_a_missing_data_path_fails_before_any_work(home, capsys):
    assert main(["train", str(home / "nowhere.csv")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "path names no file or folder" in line
    _nothing_started(home)


@pytest.mark.parametrize(
    "flags",
    [["--k", "ten"], ["--protocol", "sideways"], ["--margin", "x"], ["--rerank-strength", ""]],
    ids=lambda v: " ".join(v),
)
def test_a_flag_of_the_wrong_type_is_refused_by_the_parser(tiny, home, capsys, flags):
    with pytest.raises(SystemExit) as exited:
        main(["train", str(tiny), *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "Traceback" not in err
    _nothing_started(home)


def test_the_issue_repro_through_the_console_script(tiny, home):
    # Regression (issue 14): --rerank-strength 5 failed only after v1 was
    # registered and promoted.
    script = Path(sys.executable).with_name("recsys")
    done = subprocess.run(
        [str(script), "train", str(tiny), "--rerank-strength", "5"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert done.returncode == 2
    line = _one_error_line(done.stderr, "train")
    assert "--rerank-strength must lie in [0, 1], got 5.0" in line
    assert done.stdout == ""
    _nothing_started(home)


# --------------------------------------------------- recsys benchmark flags
BENCHMARK_CASES = [
    (["--k", "0"], "--k must lie in [1, 200]"),
    (["--models", ""], "--models must name at least one model"),
    (["--models", "popularity,nosuch"], "--models names unknown model 'nosuch'"),
    (["--rerank", "nosuch"], "--rerank must be one of"),
    (["--rerank", "ease", "--rerank-lams", "0,2"], "--rerank-lams must lie in [0, 1]"),
    (["--rerank", "ease", "--rerank-lams", "a,b"], "--rerank-lams must be comma-separated"),
    (["--rerank", "ease", "--rerank-lams", ","], "--rerank-lams must name at least one"),
    (["--rerank", "ease", "--rerank-pool", "0"], "--rerank-pool must lie in [1, 10000]"),
    (["--format", "xlsx"], "--format must be one of"),
]


@pytest.mark.parametrize(("flags", "message"), BENCHMARK_CASES, ids=lambda v: " ".join(v))
def test_a_bad_benchmark_flag_fails_before_any_work_and_names_the_flag(
    tiny, home, capsys, monkeypatch, flags, message
):
    def no_work(*args, **kwargs):
        raise AssertionError("the benchmark started on a bad flag")

    monkeypatch.setattr("recsys.pipeline.benchmark.load_input", no_work)
    assert main(["benchmark", "--data", str(tiny), "--no-cold-users", *flags]) == 2
    line = _one_error_line(capsys.readouterr().err, "benchmark")
    assert line.removeprefix("recsys benchmark: error: ").startswith(message), line


def test_a_missing_benchmark_data_path_names_the_flag(home, capsys):
    assert main(["benchmark", "--data", str(home / "nowhere")]) == 2
    assert "--data names no file or folder" in _one_error_line(capsys.readouterr().err, "benchmark")


def test_the_library_entry_checks_the_same_rules():
    from recsys.pipeline import PipelineOptions

    with pytest.raises(InputError, match=r"^rerank_strength must lie in \[0, 1\]"):
        PipelineOptions(data_path=str(ROOT), rerank_strength=5)
    with pytest.raises(InputError, match=r"^models must name at least one model"):
        PipelineOptions(data_path=str(ROOT), models=())
    with pytest.raises(InputError, match=r"^margin must be at least 0"):
        PipelineOptions(data_path=str(ROOT), margin=-1)


# ---------------------------------------------------------------- DAG params
@pytest.fixture(scope="module")
def training_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "recsys_training.py"))
    assert bag.import_errors == {}
    return bag.dags["recsys_training"]


@pytest.fixture
def dag_defaults(training_dag, tmp_path) -> dict:
    params = {name: training_dag.params[name] for name in training_dag.params}
    return {**params, "data_path": str(tmp_path)}


#: (conf, the param the first task's error names, whether the trigger's schema refuses it too)
DAG_CASES = [
    ({"models": []}, "models", True),
    ({"models": ["nosuch"]}, "models", True),
    ({"models": ["popularity", "popularity"]}, "models", True),
    ({"models": "popularity"}, "models", True),
    ({"k": 0}, "k", True),
    ({"k": 201}, "k", True),
    ({"k": "10"}, "k", True),
    ({"k": 2.5}, "k", True),
    ({"margin": -1}, "margin", True),
    ({"rerank_strength": 5}, "rerank_strength", True),
    ({"rerank_strength": -0.5}, "rerank_strength", True),
    ({"protocol": "sideways"}, "protocol", True),
    ({"data_format": "xlsx"}, "data_format", True),
    ({"tuning_trials": -1}, "tuning_trials", True),
    ({"tuning_timeout_s": 0}, "tuning_timeout_s", True),
    ({"max_sequence_length": 0}, "max_sequence_length", True),
    ({"min_new_interactions": -5}, "min_new_interactions", True),
    ({"model_name": "a/b"}, "model_name", True),
    ({"data_path": "/no/such/data"}, "data_path", False),
    ({"model": ["popularity"]}, "model", False),  # a typo of "models"
]


@pytest.mark.parametrize(("conf", "name", "schema"), DAG_CASES, ids=lambda v: json.dumps(v))
def test_a_bad_dag_param_fails_at_trigger_or_at_the_first_task(
    training_dag, dag_defaults, conf, name, schema
):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    # The trigger: Airflow merges the conf into the DAG's params and validates.
    merged = ParamsDict()
    merged.update(training_dag.params)
    if schema:
        with pytest.raises(ParamValidationError, match=name):
            merged.update(conf)
            merged.validate()
    # The first task: the same rules as the CLI's, naming the param.
    with pytest.raises(InputError) as refused:
        options.check_dag_params({**dag_defaults, **conf})
    assert f"param {name} " in str(refused.value) or f"param(s) {name};" in str(refused.value)


def test_the_dag_defaults_pass_the_first_task_check(dag_defaults):
    checked = options.check_dag_params(dag_defaults)
    assert checked["models"] == tuple(dag_defaults["models"])


def test_the_dag_params_carry_the_schema_of_the_cli_rules(training_dag):
    for name in options.DAG_PARAMS:
        schema = training_dag.params.get_param(name).schema
        for keyword, value in options.param_schema(name).items():
            if name == "data_path":
                continue  # its rule (an existing path) is checked on the worker
            assert schema[keyword] == value, (name, keyword)


def test_the_first_task_fails_without_retrying_on_a_bad_param(training_dag):
    # check_new_data turns the InputError into AirflowFailException: a retry cannot help.
    source = (ROOT / "dags" / "recsys_training.py").read_text()
    body = source[source.index("def check_new_data") : source.index("def validate")]
    assert body.index("check_dag_params(dict(params))") < body.index("pipeline.new_interactions")
    assert "raise AirflowFailException" in body


@pytest.mark.slow
def test_a_real_dag_run_with_an_unknown_param_fails_at_its_first_task(airflow_db, tiny, home):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["recsys_training"]
    run = dag.test(run_conf={"data_path": str(tiny), "model": ["popularity"]})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["check_new_data"] == "failed"
    assert states["validate"] in ("upstream_failed", "None")
    _nothing_started(home)


# ------------------------------------------- pseudonyms of a failing batch
def _hostile_batch(path: Path) -> Path:
    rows = [
        {"user_id": f"u{u}", "item_id": str(i), "rating": "4", "timestamp": 1000 + u * 10 + i}
        for u in range(8)
        for i in range(6)
    ]
    # Exact duplicates put the user ids among the examples; a rating that is markup.
    rows += [{"user_id": EVIL_ID, "item_id": "1", "rating": "4", "timestamp": 5}] * 3
    rows += [{"user_id": RAW_ID, "item_id": "2", "rating": "5", "timestamp": 6}] * 3
    rows[1]["rating"] = EVIL_RATING
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_with_a_key_a_failing_batch_leaves_pseudonyms_only(home, monkeypatch, caplog):
    from recsys import config
    from recsys.data.prepare import pseudonymise_ids
    from recsys.pipeline import RunFolder, validate_data
    from recsys.ui import datadocs

    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", KEY)
    evil, raw = pseudonymise_ids([EVIL_ID, RAW_ID], KEY)
    batch = _hostile_batch(home / "hostile.csv")
    with caplog.at_level(logging.DEBUG), pytest.raises(DataValidationError) as failed:
        validate_data("keyed", str(batch), data_format="csv")
    run = RunFolder("keyed")
    report = json.loads(run.file("validation.json").read_text())
    docs = _all_text(run.data_docs)
    quarantine = "\n".join(
        (config.recsys_home() / "quarantine" / "keyed" / f).read_text()
        for f in ("report.json", "summary.txt")
    )
    places = {
        "error message": str(failed.value),
        "log lines": caplog.text,
        "validation.json": json.dumps(report),
        "Data Docs HTML": docs,
        "quarantine report": quarantine,
    }
    for where, text in places.items():
        assert RAW_ID not in text and "onerror" not in text, where
    for where in ("error message", "validation.json", "Data Docs HTML", "quarantine report"):
        assert raw in places[where] and evil in places[where], where
    assert report["pseudonymised"] is True
    # The page shows those pseudonyms as they are (not hashed twice) and serves GX's pages.
    shown = datadocs.report_data(config.runs_root(), "keyed")
    assert not shown["gx_withheld"] and shown["gx_pages"]
    examples = [e for s in shown["suites"] for f in s["failures"] for e in f["examples"]]
    assert any(raw in e for e in examples)


def test_gx_pages_written_before_the_key_are_withheld_once_it_is_set(home, monkeypatch):
    from recsys import config
    from recsys.pipeline import validate_data
    from recsys.ui import datadocs

    with pytest.raises(DataValidationError):
        validate_data("unkeyed", str(_hostile_batch(home / "h.csv")), data_format="csv")
    assert datadocs.report_data(config.runs_root(), "unkeyed")["gx_pages"]
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", KEY)
    shown = datadocs.report_data(config.runs_root(), "unkeyed")
    assert shown["gx_withheld"] and shown["gx_pages"] == []


# ---------------------------------------- the page, through a real server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Markup(html.parser.HTMLParser):
    """Every element and attribute a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _live_markup(text: str) -> list[str]:
    parser = _Markup()
    parser.feed(text)
    bad = []
    for tag, attrs in parser.tags:
        if tag in ("script", "iframe", "object", "embed", "base"):
            bad.append(tag)
        if tag == "img" and attrs.get("src") == "x":
            bad.append("img src=x")
        bad += [f"{tag} {a}" for a in attrs if a.startswith("on")]
        bad += [f"{tag} {a}" for a, v in attrs.items() if "javascript:" in (v or "").lower()]
    return bad


@pytest.fixture(scope="module", params=[None, KEY], ids=["no-key", "key"])
def served_page(request, tmp_path_factory):
    """The plugin's app under uvicorn, over a home with a hostile rejected batch,
    a keyed rejected batch and an MLflow store (no runs); the server runs
    without a pseudonym key, then with one. Yields ``(base URL, key)``."""
    from recsys.pipeline import validate_data

    tmp = tmp_path_factory.mktemp("served")
    env = {
        **os.environ,
        "RECSYS_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "RECSYS_ARTIFACT_ROOT": (tmp / "artifacts").as_uri(),
    }
    env.pop("RECSYS_PSEUDONYM_KEY", None)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RECSYS_HOME", "MLFLOW_TRACKING_URI", "RECSYS_ARTIFACT_ROOT"):
            mp.setenv(name, env[name])
        mp.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
        batch = _hostile_batch(tmp / "hostile.csv")
        with pytest.raises(DataValidationError):
            validate_data("hostile", str(batch), data_format="csv")
        mp.setenv("RECSYS_PSEUDONYM_KEY", KEY)
        with pytest.raises(DataValidationError):
            validate_data("hostile-keyed", str(batch), data_format="csv")
    if request.param:
        env["RECSYS_PSEUDONYM_KEY"] = request.param
    port = _free_port()
    code = (
        "import uvicorn; from recsys.ui.app import create_app; "
        f"uvicorn.run(create_app(authorize=None), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{base}/no-such-route", timeout=2)
            break
        except httpx.TransportError:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the page server did not start"
            time.sleep(0.5)
    try:
        yield base, request.param
    finally:
        server.terminate()
        server.wait(timeout=30)


def _crawl(base: str) -> dict[str, object]:
    """Every page reachable from the Recommender page and the data-docs reports, plus
    addresses a visitor might make up; path → response."""
    from urllib.parse import urljoin, urlparse

    import httpx

    made_up = [
        "/page.json",
        "/data-docs/hostile",
        f"/plots/{'0' * 32}/x",
        f"/plots/{'0' * 32}/plots/x.png",
        "/plots/not-a-run/x",
        "/plots/..%2F..%2Fetc/passwd",
        "/data-docs/..%2F..%2F/",
        "/data-docs/hostile/..%2Fvalidation.json",
        "/data-docs/nosuch/",
        "/?model=%3Cscript%3Ealert(3)%3C%2Fscript%3E",
        "/no-such-route",
    ]
    queue = ["/", "/data-docs/hostile/", "/data-docs/hostile-keyed/", *made_up]
    seen: dict[str, object] = {}
    with httpx.Client(base_url=base, follow_redirects=False, timeout=60) as client:
        while queue and len(seen) < 60:
            path = queue.pop(0)
            if path in seen:
                continue
            response = client.get(path, headers={"accept": "text/html"})
            seen[path] = response
            if "text/html" not in response.headers.get("content-type", ""):
                continue
            parser = _Markup()
            parser.feed(response.text)
            for _, attrs in parser.tags:
                href = attrs.get("href") or attrs.get("src")
                if not href or href.startswith(("http:", "https:", "#", "mailto:")):
                    continue
                target = urlparse(urljoin(base + path, href))
                if target.netloc == urlparse(base).netloc:
                    queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return seen


def test_no_page_the_plugin_serves_holds_live_markup_and_each_has_the_csp(served_page):
    base, key = served_page
    responses = _crawl(base)
    gx_pages = [p for p in responses if p.endswith(".html") and "/validations/" in p]
    # GX's own pages were reached and checked (with a key: only the keyed run's).
    assert len(gx_pages) >= (1 if key else 2), sorted(responses)
    for path, response in responses.items():
        if key:  # no raw id anywhere, JSON included
            assert RAW_ID not in response.text and "onerror" not in response.text, path
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src 'none'" in csp, path
        assert response.headers.get("x-content-type-options") == "nosniff", path
        if "text/html" in response.headers.get("content-type", ""):
            assert _live_markup(response.text) == [], path
    hostile = responses["/data-docs/hostile/"]
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in hostile.text
    if key:
        from recsys.data.prepare import pseudonymise_ids

        evil, raw = pseudonymise_ids([EVIL_ID, RAW_ID], key)
        for report in ("/data-docs/hostile/", "/data-docs/hostile-keyed/"):
            assert evil in responses[report].text and raw in responses[report].text, report
        assert all(evil in responses[p].text for p in gx_pages)
    else:
        assert "&lt;img src=x onerror=alert(1)&gt;" in hostile.text


def test_an_unknown_runs_plot_is_404_not_500(served_page):
    import httpx

    base, _ = served_page
    for run in ("0" * 32, "f" * 32, "not-a-run"):
        response = httpx.get(f"{base}/plots/{run}/x", timeout=60)
        assert response.status_code == 404, (run, response.text)
        assert "no such run" in response.json()["detail"]
        assert "Traceback" not in response.text


# ------------------------------------------ a pseudonym key turned on later
@pytest.mark.slow
def test_turning_the_key_on_replaces_the_old_champion_as_incomparable(
    tiny, home, monkeypatch, capsys
):
    from recsys import registry
    from recsys.pipeline import PipelineOptions, run_pipeline

    opts = PipelineOptions(data_path=str(tiny), models=("popularity",), k=5)
    first = run_pipeline(opts, "before-key")
    assert first["decision"]["kind"] == "first_run"
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", KEY)
    second = run_pipeline(opts, "after-key")  # raised MlflowException before the fix
    decision = second["decision"]
    assert decision["kind"] == "replace_incomparable" and decision["promote"]
    assert "RECSYS_PSEUDONYM_KEY was set since it was trained" in decision["reason"]
    assert decision["champion_version"] == 1 and decision["candidate_version"] == 2
    name = second["validation"]["registered_model"]
    assert registry.get_champion(name)["version"] == 2
    # And the new champion serves a raw id through the key.
    user = pd.read_parquet(tiny / "interactions.parquet")["user_id"].iloc[0]
    assert main(["recommend", "--model", name, "--user", str(user), "--k", "5", "--json"]) == 0
    served = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(served) == 5 and {r["user_id"] for r in served} == {str(user)}
    assert {r["served_by"] for r in served} == {"batch"}  # the pseudonym's own list


@pytest.mark.parametrize(
    ("then", "now", "said"),
    [
        (None, KEY, "RECSYS_PSEUDONYM_KEY was set since"),
        (KEY, None, "RECSYS_PSEUDONYM_KEY was unset since"),
        (KEY, "another-key", "RECSYS_PSEUDONYM_KEY changed since"),
        (KEY, KEY, None),
    ],
)
def test_the_gate_names_how_the_key_changed(home, then, now, said):
    from recsys.data.prepare import key_fingerprint
    from recsys.pipeline import RunFolder
    from recsys.pipeline.steps import TAG_PSEUDONYM_KEY, _key_changed

    run = RunFolder("k").create()
    run.write_json("input.json", {"pseudonym_key": key_fingerprint(now)})
    champion = {"run_tags": {TAG_PSEUDONYM_KEY: key_fingerprint(then)}}
    why = _key_changed(run, champion)
    assert (why is None) if said is None else (said in why)
    assert key_fingerprint(KEY) not in (why or "") and KEY not in (why or "")


# ------------------------------------------------- commands that read the store
READ_COMMANDS = [
    ["recommend", "--user", "1"],
    ["status"],
    ["rollback"],
    ["promote", "--version", "1", "--reason", "test"],
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: a[0])
def test_a_missing_store_is_one_line_and_is_not_created(tmp_path, monkeypatch, capsys, argv):
    db = tmp_path / "absent" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"no MLflow store at {db}" in line
    assert not db.parent.exists()


def test_the_default_store_is_not_created_by_a_read(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RECSYS_MLRUNS", str(tmp_path / "mlruns"))
    assert main(["recommend", "--user", "1"]) == 2
    assert "(the default)" in _one_error_line(capsys.readouterr().err, "recommend")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a database at all" * 40])
def test_a_file_that_is_no_mlflow_store_is_named(tmp_path, monkeypatch, capsys, content):
    db = tmp_path / "other.db"
    db.write_bytes(content)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    assert main(["recommend", "--user", "1"]) == 2
    line = _one_error_line(capsys.readouterr().err, "recommend")
    assert str(db) in line and "MLflow store" in line
    assert db.read_bytes() == content


def test_an_unreachable_tracking_server_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    assert main(["recommend", "--user", "1"]) == 2
    assert "does not answer" in _one_error_line(capsys.readouterr().err, "recommend")


# ----------------------------------------------------------------- make ui
def test_make_ui_binds_loopback_by_default(monkeypatch):
    dry = subprocess.run(
        ["make", "-n", "ui"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    assert "--host 127.0.0.1" in dry
    spec = importlib.util.spec_from_file_location(
        "local_airflow", ROOT / "scripts/local_airflow.py"
    )
    local = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "local_airflow", local)  # its dataclasses look it up
    spec.loader.exec_module(local)
    settings = local.Settings("127.0.0.1", 8080, 5000, ROOT / "var" / "ui", "stop")
    servers = local.commands(settings, "sqlite:///x.db")
    for name in ("api-server", "mlflow"):
        argv = servers[name]
        assert argv[argv.index("--host") + 1] == "127.0.0.1", name
    for name in ("scheduler", "triggerer"):
        assert "--skip-serve-logs" in servers[name], name  # no log server on 0.0.0.0
