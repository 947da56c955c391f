# The two commands a user needs: `make demo` and `make test`; `make ui` and
# `make ui-stop` start and stop a local Airflow with its UI; `make serve` answers
# recommendations over HTTP.
# They create the environment in .venv/ first when it is missing or stale.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9

# Let Python cache compiled bytecode: recompiling mlflow, airflow and pandas in
# every process roughly doubles the test suite's CPU time.
unexport PYTHONDONTWRITEBYTECODE

# The embedded default: everything under var/ and mlruns/. `make demo` and
# `make ui` share the Airflow home (SQLite metadata) and the MLflow store, so
# the UI shows the demo's run.
export RECSYS_HOME       ?= $(CURDIR)/var
export RECSYS_DATA_PATH  ?= $(RECSYS_HOME)/data/demo
export RECSYS_MLRUNS     ?= $(CURDIR)/mlruns
export AIRFLOW_HOME      ?= $(RECSYS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER    ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES  ?= False
export AIRFLOW__CORE__PARALLELISM    ?= 4
# A DAG is created unpaused, so its schedule runs and a trigger starts at once;
# one you pause in the UI stays paused.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION ?= False
export TF_CPP_MIN_LOG_LEVEL ?= 2

# `make ui`: where the Airflow and MLflow UIs listen (make ui AIRFLOW_PORT=8081).
AIRFLOW_PORT ?= 8080
MLFLOW_PORT  ?= 5000
BIND         ?= 127.0.0.1
UI_STATE     := $(RECSYS_HOME)/ui

DEMO_USERS ?= 2000
DEMO_ITEMS ?= 1000
DEMO_INTERACTIONS ?= 200000

# `make serve`: where the recommendation service listens (make serve SERVE_PORT=8001).
SERVE_PORT ?= 8000

.PHONY: venv demo ui ui-stop serve bench-serve test bench bench-table bench-scale lint clean

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
	@$(BIN)/python scripts/demo_run.py $(RECSYS_HOME)/demo-dag.log recsys_training
	@$(BIN)/recsys status

# A whole local Airflow in the background (api-server, scheduler, dag-processor,
# triggerer; LocalExecutor on the SQLite database of $(AIRFLOW_HOME)) and the
# MLflow UI. Waits until they answer, then prints the URLs and the login.
# Pid files and server logs: $(UI_STATE)/.
ui: $(STAMP)
	@$(BIN)/python scripts/local_airflow.py start --host $(BIND) \
	  --airflow-port $(AIRFLOW_PORT) --mlflow-port $(MLFLOW_PORT) \
	  --state-dir $(UI_STATE) --stop-hint "make ui-stop"

# Stops every server `make ui` started, and every process they started.
ui-stop:
	@$(BIN)/python scripts/local_airflow.py stop --state-dir $(UI_STATE)

# The recommendation service on the embedded default's champion (train one with
# `make demo` first), in the foreground; Ctrl-C stops it. Without RECSYS_REDIS_URL
# every answer comes from the model; with it (make serve
# RECSYS_REDIS_URL=redis://127.0.0.1:6379/1) from the batch lists the recommend
# step cached there, too.
serve: $(STAMP)
	$(BIN)/recsys serve --host $(BIND) --port $(SERVE_PORT)

# Load test of the service beside `mlflow models serve` of the same champion
# (wrk from Debian's package; a local Redis for the cache). The table lands in
# $(RECSYS_HOME)/bench/serve.md, the figures in serve.json.
bench-serve: $(STAMP)
	@command -v wrk >/dev/null || { echo "bench-serve needs wrk: apt-get install wrk"; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/serve_bench.py --out $(RECSYS_HOME)/bench

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not slow" --durations=25

ML100K ?= ../shared/data/ml-100k

BENCH_MODELS ?= popularity,itemknn,als,ease,content,ranker,attention

# The slow checks, then the ML-100K tables in README (msr, loo and temporal,
# every model, with the beyond-accuracy columns and the popularity re-ranking
# trade-off). Each protocol's tables land in var/bench/<protocol>.md.
bench: $(STAMP)
	$(BIN)/pytest -q -m slow
	$(MAKE) bench-table

# Cost of one training run as the data grows (0.2M to 10M synthetic interactions):
# every step in its own process, wall time and peak memory, with the load average.
SCALE_SIZES ?= 0.2,1,3,10

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --sizes $(SCALE_SIZES) --out $(RECSYS_HOME)/bench/scale
	cat $(RECSYS_HOME)/bench/scale/scale.md

bench-table: $(STAMP)
	mkdir -p $(RECSYS_HOME)/bench
	for p in msr loo temporal; do $(BIN)/recsys benchmark --data $(ML100K) --protocol $$p \
	  --models $(BENCH_MODELS) --no-cold-users --rerank ease \
	  --rerank-plot $(RECSYS_HOME)/bench/tradeoff-$$p.png \
	  --output $(RECSYS_HOME)/bench/$$p.json > $(RECSYS_HOME)/bench/$$p.md || exit 1; \
	  cat $(RECSYS_HOME)/bench/$$p.md; done

LINTED := recsys dags plugins tests benchmarks scripts

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

clean:
	rm -rf var mlruns/mlflow.db mlruns/artifacts
