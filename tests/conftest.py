"""Shared test set-up: every test runs against throw-away stores.

Environment variables are set before anything imports airflow or mlflow, so a
test never touches the developer's ``var/``, ``mlruns/`` or Airflow home.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="recsys-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_TMP / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["RECSYS_HOME"] = str(_SESSION_TMP / "var")
os.environ["RECSYS_MLRUNS"] = str(_SESSION_TMP / "mlruns")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The Spark engine's one session per test process (tests/test_spark.py and spark_als
# in the contract suite): local mode on two cores, no UI, few shuffle partitions,
# a JVM tuned to start fast rather than to run long.
os.environ.setdefault("SPARK_MASTER", "local[2]")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault(
    "RECSYS_SPARK_CONF",
    json.dumps(
        {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.extraJavaOptions": "-Xss16m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        }
    ),
)

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K folder beside the checkout (never copied into the repo)."""
    if not (ML100K / "u.data").exists():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    return ML100K


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Airflow's metadata database, migrated, for a module whose tests run DAGs."""
    import subprocess

    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def isolated_mlflow(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store for one test; returns its tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECSYS_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    return uri


#: Files that spend minutes waiting on servers or Airflow runs: started first, so
#: with ``pytest -n 2 --dist loadfile`` they overlap the quick files instead of
#: running alone at the end.
_LONG_FILES = (
    "test_production_stack.py",
    "test_ui_airflow.py",
    "test_end_to_end.py",
    "test_browser.py",
    "test_ui.py",
    "test_attention.py",
    "test_spark.py",
)


def pytest_sessionfinish(session, exitstatus):
    """Stop the Spark session a test started while output can still be written:
    py4j logs as it closes its connections, and a connection closed by the
    garbage collector at interpreter exit wrote "--- Logging error ---" and a
    traceback to a stream pytest had already closed."""
    logging.getLogger("py4j").setLevel(logging.WARNING)
    sql = sys.modules.get("pyspark.sql")
    active = sql.SparkSession.getActiveSession() if sql is not None else None
    if active is not None:
        active.stop()


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return _LONG_FILES.index(name) if name in _LONG_FILES else len(_LONG_FILES)

    items.sort(key=rank)


@pytest.fixture
def make_decision():
    """A factory of gate-style decisions for registry tests: promote when
    ``candidate - champion >= margin`` (always without a champion)."""
    from recsys.promotion.decision import Decision

    def make(
        candidate: float, champion: float | None, *, margin: float = 0.0, **versions: int
    ) -> Decision:
        promote = champion is None or candidate - champion >= margin - 1e-12
        verdict = "promote" if promote else "hold"
        return Decision(
            promote=promote,
            candidate_score=candidate,
            champion_score=champion,
            margin=margin,
            metric="ndcg@10",
            reason=f"{verdict}: ndcg@10 {candidate} vs champion {champion}",
            **versions,
        )

    return make
