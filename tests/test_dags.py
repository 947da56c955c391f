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
#: The one part of recsys a DAG file may import at parse time: the model
#: registry's names, which import no numerical library (checked below).
LIGHT = {"recsys.models"}


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
        **{t: {"evaluate"} for t in trains},
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
        "import sys; import recsys.models; "
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
