# One command to set up and run each thing; set-up is idempotent and takes seconds when warm.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

.PHONY: setup test demo dev bench bench-full soak broker-start broker-stop sandbox clean

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

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m reporting_assets.demo

dev: setup
	$(PY) -m reporting_assets.infra.kafka start --port 9092
	$(PY) -m reporting_assets.sandbox --port 8085 > data/sandbox.log 2>&1 & echo $$! > data/sandbox.pid
	$(VENV)/bin/dagster dev -w workspace.yaml -p 3000; \
	  kill $$(cat data/sandbox.pid) 2>/dev/null; $(PY) -m reporting_assets.infra.kafka stop

broker-start: setup
	$(PY) -m reporting_assets.infra.kafka start --port 9092

broker-stop:
	$(PY) -m reporting_assets.infra.kafka stop

sandbox: setup
	$(PY) -m reporting_assets.sandbox --port 8085

clean:
	rm -rf data/landing data/exports data/warehouse.duckdb data/kafka data/dagster_home
