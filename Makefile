# One command to set up and run each thing; set-up is idempotent and takes seconds when warm.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

CHROMIUM := /usr/bin/chromium

.PHONY: setup ui-setup cluster-setup test test-cluster test-fast lint format check-defs demo dev bench bench-quick bench-full soak broker-start broker-stop kafka-cluster-start kafka-cluster-stop spark-cluster-start spark-cluster-stop sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)
	$(PY) -m reporting_assets.infra.maven
	@mkdir -p $(DAGSTER_HOME)/.nux && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	@test -f $(DAGSTER_HOME)/.nux/nux.yaml || echo "seen: 1" > $(DAGSTER_HOME)/.nux/nux.yaml

# Debian's chromium for the UI test (headless); skipped when already installed.
ui-setup:
	@test -x $(CHROMIUM) || { \
	  echo "installing chromium (apt-get, about a minute)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "chromium is still missing at $(CHROMIUM): the UI test cannot run" >&2; exit 1; }

# Debian's PostgreSQL server binaries for the Postgres-backed Dagster test (the cluster tier, which
# starts its own server on a free port); skipped when an initdb is already installed.
cluster-setup:
	@test -n "$$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" || { \
	  echo "installing postgresql (apt-get, about a minute)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@test -n "$$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" || { \
	  echo "no /usr/lib/postgresql/*/bin/initdb: the Postgres-backed Dagster test cannot run" >&2; exit 1; }

# The whole suite (CI): lint, format check, every definition loaded by `dg check defs`, then all tests
# but the cluster tier.
test: setup ui-setup lint check-defs
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

# The cluster tier (CI runs it after `make test`): secured Kafka, a 3-broker cluster, a standalone Spark
# cluster and Postgres-backed Dagster, each started on loopback by its test.
test-cluster: setup cluster-setup
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

# The unit tier (no broker, Spark or daemon): about a minute.
test-fast: setup lint check-defs
	$(PY) -m pytest -m "unit and not cluster" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check reporting_assets reporting_assets_tests bench
	$(VENV)/bin/ruff format --check reporting_assets reporting_assets_tests bench

format: setup
	$(VENV)/bin/ruff check --fix reporting_assets reporting_assets_tests bench
	$(VENV)/bin/ruff format reporting_assets reporting_assets_tests bench

check-defs: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/dg check defs

demo: setup
	$(PY) -m reporting_assets.demo

# Broker (unless one runs already), sandbox and `dagster dev` (webserver + daemon) with this code
# location; Ctrl-C stops dagster, the sandbox, and the broker if this target started it.
DEV_PORT ?= 3000
dev: setup
	@mkdir -p data
	@$(PY) -m reporting_assets.infra.kafka status >/dev/null 2>&1; broker_was_up=$$?; \
	$(PY) -m reporting_assets.infra.kafka start --port 9092 || exit 1; \
	$(PY) -m reporting_assets.sandbox --port 8085 > data/sandbox.log 2>&1 & sandbox=$$!; \
	trap 'kill $$sandbox 2>/dev/null; [ $$broker_was_up -eq 0 ] || $(PY) -m reporting_assets.infra.kafka stop' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "Dagster UI: http://127.0.0.1:$(DEV_PORT)  (sandbox log: data/sandbox.log; Ctrl-C stops everything)"; \
	REPORTING_SENSOR_INTERVAL_S=$${REPORTING_SENSOR_INTERVAL_S:-10} \
	  $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DEV_PORT)

# 100 seeded crash trials on a bigger workload (about 30-40 minutes); writes docs/reliability-soak.md.
soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

# The ten benchmarks (bench/README.md), each on its own broker topics and sandbox. `make bench`: the full
# sizes (about 60 minutes here), writes bench/RESULTS.md; `make bench-quick`: small sizes, about 8 minutes,
# writes bench/out/RESULTS-quick.md. BENCH_ARGS="--only throughput,resume" runs some of them.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: setup $(BENCH_STAMP)
	$(PY) -m bench --quick $(BENCH_ARGS)

broker-start: setup
	$(PY) -m reporting_assets.infra.kafka start --port 9092

broker-stop:
	$(PY) -m reporting_assets.infra.kafka stop

# A 3-broker KRaft cluster on loopback (ports 9192-9194, controllers 9195-9197, data/kafka-cluster).
kafka-cluster-start: setup
	$(PY) -m reporting_assets.infra.kafka.cluster start

kafka-cluster-stop:
	$(PY) -m reporting_assets.infra.kafka.cluster stop

# A standalone Spark master and worker on loopback, from pyspark's distribution (master spark://127.0.0.1:7077,
# its UI on 8480, the worker on 7078 / 8481 with 1 core and 1g, data/spark-cluster); then SPARK_MASTER=spark://127.0.0.1:7077.
spark-cluster-start: setup
	$(PY) -m reporting_assets.infra.spark start

spark-cluster-stop:
	$(PY) -m reporting_assets.infra.spark stop

sandbox: setup
	$(PY) -m reporting_assets.sandbox --port 8085

clean:
	rm -rf data/landing data/exports data/warehouse.duckdb data/kafka data/kafka-cluster data/spark-cluster data/dagster_home
