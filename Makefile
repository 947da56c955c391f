# The two commands a user needs: `make demo` and `make test`.
# Both create the environment in .venv/ first when it is missing or stale.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9

# Let Python cache compiled bytecode: recompiling mlflow, airflow and pandas in
# every process roughly doubles the test suite's CPU time.
unexport PYTHONDONTWRITEBYTECODE

# The embedded default: everything under var/ and mlruns/, no servers.
export RECSYS_HOME       ?= $(CURDIR)/var
export RECSYS_DATA_PATH  ?= $(RECSYS_HOME)/data/demo
export AIRFLOW_HOME      ?= $(RECSYS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER    ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES  ?= False
export AIRFLOW__CORE__PARALLELISM    ?= 4
export TF_CPP_MIN_LOG_LEVEL ?= 2

DEMO_USERS ?= 2000
DEMO_ITEMS ?= 1000
DEMO_INTERACTIONS ?= 200000

.PHONY: venv demo ui test bench bench-table lint clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	test -f $(RECSYS_DATA_PATH)/interactions.parquet || \
	  $(BIN)/recsys generate --users $(DEMO_USERS) --items $(DEMO_ITEMS) \
	    --interactions $(DEMO_INTERACTIONS) --out $(RECSYS_DATA_PATH)
	$(BIN)/airflow db migrate > $(RECSYS_HOME)/airflow-migrate.log 2>&1 || \
	  (cat $(RECSYS_HOME)/airflow-migrate.log; exit 1)
	@echo "running the recsys_training DAG (airflow dags test); its log: $(RECSYS_HOME)/demo-dag.log"
	@$(BIN)/airflow dags test recsys_training > $(RECSYS_HOME)/demo-dag.log 2>&1 || \
	  (tail -n 60 $(RECSYS_HOME)/demo-dag.log; echo "the DAG run failed; the whole log is in $(RECSYS_HOME)/demo-dag.log"; exit 1)
	@grep -q "DagRun Finished.*state=success" $(RECSYS_HOME)/demo-dag.log || \
	  (tail -n 60 $(RECSYS_HOME)/demo-dag.log; echo "the DAG run did not succeed; the whole log is in $(RECSYS_HOME)/demo-dag.log"; exit 1)
	@echo "the DAG run succeeded"
	$(BIN)/recsys status

# The Airflow UI with the Recommender page, plus the MLflow UI on port 5000.
ui: $(STAMP)
	mkdir -p $(RECSYS_HOME)
	$(BIN)/airflow db migrate > $(RECSYS_HOME)/airflow-migrate.log 2>&1 || \
	  (cat $(RECSYS_HOME)/airflow-migrate.log; exit 1)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --port 5000 > $(RECSYS_HOME)/mlflow-ui.log 2>&1 &
	@echo "Open http://localhost:8080/plugin/recommender and sign in as admin;"
	@echo "the password is in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	$(BIN)/airflow api-server --port 8080

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not slow"

ML100K ?= ../shared/data/ml-100k

BENCH_MODELS ?= popularity,itemknn,als,ease,content,ranker,attention

# The slow checks, then the ML-100K tables in README (msr, loo and temporal,
# every model, with the beyond-accuracy columns and the popularity re-ranking
# trade-off). Each protocol's tables land in var/bench/<protocol>.md.
bench: $(STAMP)
	$(BIN)/pytest -q -m slow
	$(MAKE) bench-table

bench-table: $(STAMP)
	mkdir -p $(RECSYS_HOME)/bench
	for p in msr loo temporal; do $(BIN)/recsys benchmark --data $(ML100K) --protocol $$p \
	  --models $(BENCH_MODELS) --no-cold-users --rerank ease \
	  --rerank-plot $(RECSYS_HOME)/bench/tradeoff-$$p.png \
	  --output $(RECSYS_HOME)/bench/$$p.json > $(RECSYS_HOME)/bench/$$p.md || exit 1; \
	  cat $(RECSYS_HOME)/bench/$$p.md; done

LINTED := recsys dags plugins tests benchmarks

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

clean:
	rm -rf var mlruns/mlflow.db mlruns/artifacts
