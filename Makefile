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

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP ?= 127.0.0.1

SUBMIT := $(BIN)/spark-submit --master '$(SPARK_MASTER)'

.PHONY: setup run prep sample test lint bench-prep clean

setup: $(STAMP)

# torch first and pinned (the local CPU wheel); then the project, so the resolver keeps it.
$(STAMP): pyproject.toml scripts/ensure_java.sh
	scripts/ensure_java.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

sample: $(STAMP)
	@if [ -z "$(DATA)" ] && [ ! -f "$(RAW)/ratings.csv" ]; then \
	  $(BIN)/recsys generate --out "$(RAW)" --scale $(SCALE) --seed $(SEED); fi

prep: sample
	$(SUBMIT) jobs/ingest.py --raw "$(RAW)" --warehouse "$(WAREHOUSE)" --ds $(DS)
	$(SUBMIT) jobs/features.py --warehouse "$(WAREHOUSE)" --ds $(DS)

run: prep
	@echo
	@echo "ds=$(DS) from $(RAW):"
	@echo "  snapshot   $(WAREHOUSE)/snapshot/ds=$(DS)/   (validated parquet; manifest.json has the counts)"
	@echo "  quarantine $(WAREHOUSE)/quarantine/ds=$(DS)/ (rejected rows with their reason)"
	@echo "  features   $(WAREHOUSE)/features/ds=$(DS)/   (films, users, manifest.json)"

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check recsys_core jobs tests bench

bench-prep: $(STAMP)
	$(BIN)/python bench/prep.py --scale 1.0

clean:
	rm -rf $(WAREHOUSE) spark-warehouse metastore_db derby.log .pytest_cache
