"""The DAG files parse, stay thin and wire exactly the documented task graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"
HEAVY = {
    "tensorflow",
    "keras",
    "mlflow",
    "great_expectations",
    "xgboost",
    "sklearn",
    "pandas",
    "numpy",
    "implicit",
    "scipy",
    "recsys",
}
#: The parts of recsys a DAG file may import at parse time: the model
#: registry's names, the schema of run options, the settings (the DAGs' time
#: limits) and the errors (failing fast), which import no numerical library
#: (checked below).
LIGHT = {"recsys.models", "recsys.options", "recsys.config", "recsys.errors"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "recsys_training" in dagbag.dags


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_import_nothing_heavy_at_top_level(path):
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top}
    names = {m.split(".")[0] for m in modules - LIGHT}
    assert names.isdisjoint(HEAVY), f"{path.name} imports {names & HEAVY} at top level"


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_the_parts_of_recsys_dag_files_import_load_no_heavy_library(module):
    import subprocess
    import sys

    heavy = sorted(HEAVY - {"recsys"})
    code = f"import sys, {module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def test_training_dag_has_the_exact_task_graph(dagbag):
    dag = dagbag.dags["recsys_training"]
    models = ["popularity", "itemknn", "als", "ease", "content", "ranker", "attention", "spark_als"]
    trains = {f"train_{m}" for m in models}
    expected = {
        "check_new_data": {"validate"},
        "validate": {"prepare"},
        "prepare": {"build_features"},
        "build_features": {"tune"},
        "tune": trains,
        # The ranker trains after the others: it takes their fits for its generators.
        **{t: {"evaluate", "train_ranker"} for t in trains - {"train_ranker"}},
        "train_ranker": {"evaluate"},
        "evaluate": {"promote"},
        "promote": {"recommend"},
        "recommend": set(),
    }
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == expected


def test_training_dag_schedule_retries_and_docs(dagbag):
    dag = dagbag.dags["recsys_training"]
    assert dag.max_active_runs == 1
    assert set(dag.tags) == {"recsys", "training"}
    assert "recsys_training" in dag.doc_md
    assert all(t.retries == 2 for t in dag.tasks)
    assert all(t.doc_md for t in dag.tasks)
    assert dag.get_task("evaluate").trigger_rule == "none_failed_min_one_success"
    # A model the run does not train (skipped) does not stop the ranker.
    assert dag.get_task("train_ranker").trigger_rule == "none_failed_min_one_success"
    assert set(dag.params) == {
        "data_path",
        "data_format",
        "models",
        "protocol",
        "k",
        "min_new_interactions",
        "margin",
        "tuning_trials",
        "tuning_timeout_s",
        "max_sequence_length",
        "rerank_strength",
        "model_name",
    }
    assert dag.params["max_sequence_length"] == 50
    assert dag.params["rerank_strength"] == 0.0  # re-ranking is opt-in


def test_training_dag_fans_tuning_out_per_model(dagbag):
    tune = dagbag.dags["recsys_training"].get_task("tune")
    assert tune.is_mapped
    assert tune.op_kwargs_expand_input.value["model_name"] == [
        "popularity",
        "itemknn",
        "als",
        "ease",
        "content",
        "ranker",
        "attention",
        "spark_als",
    ]
    assert dagbag.dags["recsys_training"].params["tuning_trials"] == 0


def test_the_dag_offers_exactly_the_registered_models_and_defaults(dagbag):
    from recsys.models import DEFAULT_MODELS, available_models

    dag = dagbag.dags["recsys_training"]
    offered = dag.params.get_param("models").schema["items"]["enum"]
    assert offered == available_models()
    assert dag.params["models"] == list(DEFAULT_MODELS)
    assert {t.task_id for t in dag.tasks if t.task_id.startswith("train_")} == {
        f"train_{m}" for m in available_models()
    }


def test_the_model_registry_is_cheap_to_import_at_parse_time():
    import subprocess
    import sys

    probe = (
        "import sys; import recsys.models, recsys.options; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_training_dag_runs_when_the_evidence_says_so_and_daily(dagbag):
    dag = dagbag.dags["recsys_training"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["recsys_retrain"]
    assert dag.timetable.summary == "Asset or 0 0 * * *"


def test_monitor_dag_measures_decides_and_requests_training(dagbag):
    dag = dagbag.dags["recsys_monitor"]
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == {
        "measure": {"decide"},
        "decide": {"request_training"},
        "request_training": set(),
    }
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["recsys_interactions"]
    assert [o.name for o in dag.get_task("request_training").outlets] == ["recsys_retrain"]
    assert dag.max_active_runs == 1 and all(t.retries == 2 for t in dag.tasks)
    assert all(t.doc_md for t in dag.tasks) and set(dag.tags) == {"recsys", "monitoring"}


def test_forget_dag_takes_a_user_id_and_tells_monitoring(dagbag):
    dag = dagbag.dags["recsys_forget"]
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == {"forget": {"publish"}, "publish": set()}
    assert set(dag.params) == {"user_id", "reason"}
    schema = dag.params.get_param("user_id").schema
    assert schema["type"] == "string" and schema["minLength"] == 1
    assert dag.params.get_param("user_id").has_value is False  # required: no default
    assert "null" in dag.params.get_param("reason").schema["type"]
    assert [o.name for o in dag.get_task("publish").outlets] == ["recsys_interactions"]
    assert dag.timetable.__class__.__name__ == "NullTimetable"  # triggered by hand only
    assert dag.max_active_runs == 1 and all(t.retries == 2 for t in dag.tasks)
    assert all(t.doc_md for t in dag.tasks) and set(dag.tags) == {"recsys", "privacy"}


def test_ingest_dag_publishes_the_interactions_asset(dagbag):
    dag = dagbag.dags["recsys_ingest"]
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == {"ingest": {"publish"}, "publish": set()}
    assert [o.name for o in dag.get_task("publish").outlets] == ["recsys_interactions"]
    assert dag.max_active_runs == 1 and all(t.retries == 2 for t in dag.tasks)


def test_the_trigger_form_explains_every_param(dagbag):
    """What Airflow's trigger form renders from each param's schema (Airflow 3.3)."""
    params = dagbag.dags["recsys_training"].params
    assert all(params.get_param(name).description for name in params)
    # A type list with "null" is optional in the form: empty means $RECSYS_DATA_PATH.
    assert "null" in params.get_param("data_path").schema["type"]
    # An array with top-level `examples` is a multi-select; `items` still validates.
    models = params.get_param("models").schema
    assert models["type"] == "array" and models["examples"] == models["items"]["enum"]
    assert set(models["values_display"]) == set(models["examples"])


# ------------------------------------------------- timeouts and fail-fast
DAG_IDS = ("recsys_training", "recsys_ingest", "recsys_monitor", "recsys_forget")


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_task_and_dag_run_has_a_time_limit(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout.total_seconds() > 0
    for t in dag.tasks:
        assert t.execution_timeout is not None, t.task_id
        assert 0 < t.execution_timeout.total_seconds() <= dag.dagrun_timeout.total_seconds()


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_task_fails_fast_on_errors_a_retry_cannot_fix(dagbag, dag_id):
    for t in dagbag.dags[dag_id].tasks:
        callable_ = t.python_callable
        assert getattr(callable_, "__wrapped__", None) is not None, t.task_id
        assert "failing_fast" in callable_.__code__.co_names, t.task_id


def test_the_time_limits_come_from_the_environment(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECSYS_TASK_TIMEOUT_MINUTES", "7")
    monkeypatch.setenv("RECSYS_TRAINING_TIMEOUT_HOURS", "3")
    dag = DagBag(dag_folder=str(DAGS / "recsys_training.py")).dags["recsys_training"]
    assert dag.dagrun_timeout.total_seconds() == 3 * 3600
    assert {t.execution_timeout.total_seconds() for t in dag.tasks} == {7 * 60}


def test_failing_fast_maps_permanent_errors_and_passes_the_others():
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.errors import InputError, NotFoundError, failing_fast
    from recsys.registry.locks import LockTimeoutError

    for permanent in (InputError("bad --k"), NotFoundError("no champion")):
        with (
            pytest.raises(AirflowFailException, match=str(permanent)),
            failing_fast(AirflowFailException),
        ):
            raise permanent
    for passing in (LockTimeoutError("busy"), OSError("disk")):
        with pytest.raises(type(passing)), failing_fast(AirflowFailException):
            raise passing


def test_an_input_error_in_a_task_fails_it_at_once_not_after_its_retries(
    airflow_db, monkeypatch, tmp_path, isolated_mlflow
):
    """A data path that does not exist: check_new_data raises DataFormatError (an
    InputError). Before, the task spent both retries on it; now it fails on try 1."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECSYS_RETRY_DELAY_SECONDS", "0")
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    dag = DagBag(dag_folder=str(DAGS / "recsys_training.py")).dags["recsys_training"]
    run = dag.test(run_conf={"data_path": str(tmp_path / "missing.csv")})
    ti = next(t for t in run.get_task_instances() if t.task_id == "check_new_data")
    assert str(ti.state) == "failed"
    assert ti.try_number == 1
    assert ti.max_tries == 2  # it had retries left, and did not use them
