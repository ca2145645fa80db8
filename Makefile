# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create the virtual environment first when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

# The main job's inputs: a generated sample drop unless DATA names a MovieLens directory.
DS ?= 2018-09-30
SCALE ?= 0.002
SEED ?= 42
WAREHOUSE ?= warehouse
DATA ?=
RAW := $(if $(DATA),$(DATA),$(WAREHOUSE)/raw-sample-$(SCALE)-$(SEED))
SPARK_MASTER ?= local[*]
SHUFFLE_PARTITIONS ?= 8
# Spark's own log lines at WARN (conf/log4j2.properties); RECSYS_SPARK_LOG_LEVEL=INFO shows them all.
LOG4J := $(abspath conf/log4j2.properties)
# make airflow-ui: its Airflow home (metadata DB, logs, UI passwords), address and port
AIRFLOW_HOME_DIR ?= .airflow
AIRFLOW_HOST ?= 127.0.0.1
AIRFLOW_PORT ?= 8080

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP ?= 127.0.0.1

SUBMIT := $(BIN)/spark-submit --master '$(SPARK_MASTER)' \
	--conf spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$(LOG4J) \
	--conf spark.executor.extraJavaOptions=-Dlog4j2.configurationFile=file:$(LOG4J)

.PHONY: setup run prep sample airflow-db airflow-ui test lint bench-prep clean

setup: $(STAMP)

# torch first and pinned (the local CPU wheel); then the project, so the resolver keeps it.
$(STAMP): pyproject.toml scripts/ensure_java.sh
	scripts/ensure_java.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,airflow]'
	touch $(STAMP)

sample: $(STAMP)
	@if [ -z "$(DATA)" ] && [ ! -f "$(RAW)/ratings.csv" ]; then \
	  $(BIN)/recsys generate --out "$(RAW)" --scale $(SCALE) --seed $(SEED); fi

prep: sample
	$(SUBMIT) jobs/ingest.py --raw "$(RAW)" --warehouse "$(WAREHOUSE)" --ds $(DS)
	$(SUBMIT) jobs/features.py --warehouse "$(WAREHOUSE)" --ds $(DS)

# The main job: the Airflow DAG, once, end to end (airflow dags test) on the embedded
# defaults: SQLite metadata DB in .airflow/, Spark local, torch on CPU or GPU, the
# recommendations table as Parquet plus SQLite in the warehouse.
AIRFLOW_ENV = AIRFLOW_HOME="$(abspath $(AIRFLOW_HOME_DIR))" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	RECSYS_SPARK_SHUFFLE_PARTITIONS=$(SHUFFLE_PARTITIONS) \
	AIRFLOW__CORE__DAGS_FOLDER="$(abspath dags)" \
	AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "$(SPARK_MASTER)"}' \
	AIRFLOW_VAR_RECSYS_RAW_DIR="$(abspath $(RAW))" AIRFLOW_VAR_RECSYS_WAREHOUSE="$(abspath $(WAREHOUSE))"

airflow-db: $(STAMP)
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	@$(AIRFLOW_ENV) $(BIN)/airflow pools set recsys_warehouse 1 "one writer per warehouse (every writing task of the DAG)" >/dev/null

run: sample airflow-db
	$(AIRFLOW_ENV) $(BIN)/airflow dags test movielens_recommendations $(DS)
	@echo
	@echo "ds=$(DS) from $(RAW):"
	@echo "  table      $(WAREHOUSE)/recommendations/ds=$(DS)/ and $(WAREHOUSE)/recommendations.db (view recommendations_latest)"
	@echo "  run record $(WAREHOUSE)/metrics/ds=$(DS)/run.json"
	@echo "  also       snapshot/ quarantine/ features/ models/ embeddings/ under $(WAREHOUSE)/"
	@echo
	@$(BIN)/recsys show --warehouse "$(WAREHOUSE)" --ds $(DS) --users 3 --top 5

# The Airflow UI on http://localhost:8080 with the same settings: airflow standalone (api-server,
# scheduler, dag-processor, triggerer). It starts each component as a plain `airflow`, so the
# venv's bin/ goes first on PATH; the URL and the login (SimpleAuthManager) are printed first.
AIRFLOW_UI_ENV = PATH="$(abspath $(BIN)):$$PATH" AIRFLOW__API__HOST=$(AIRFLOW_HOST) \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_PORT) $(AIRFLOW_ENV)

airflow-ui: airflow-db
	@$(AIRFLOW_UI_ENV) $(BIN)/python scripts/airflow_ui_login.py http://localhost:$(AIRFLOW_PORT)
	$(AIRFLOW_UI_ENV) $(BIN)/airflow standalone

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check recsys_core jobs dags tests bench

bench-prep: $(STAMP)
	$(BIN)/python bench/prep.py --scale 1.0

clean:
	rm -rf $(WAREHOUSE) .airflow spark-warehouse metastore_db derby.log .pytest_cache
