# movierec: `make run` sets everything up and serves the API; `make test` runs the whole suite.
# Every step is skipped when already done, so both are cheap to repeat.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
MOVIEREC := $(VENV)/bin/movierec
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
# Elsewhere than our machines, `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu` avoids
# the multi-GB CUDA build of torch that PyPI serves on Linux.
TORCH_INDEX ?=
# One worker per core, tests grouped by file so each module's servers and databases start once.
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: run setup install db data import train serve test smoke compose-up compose-down compose-test bench bench-deps bench-quick bench-accuracy bench-speed bench-serving bench-ann bench-plots bench-import bench-replay soak clean help

help:
	@echo "make run    set up (venv, database, MovieLens 100K, model) and serve on http://$(HOST):$(PORT)"
	@echo "make test   run the whole test suite (SQLite and PostgreSQL)"
	@echo "make compose-up / compose-down / compose-test   the docker compose stack on a Docker Engine"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,test]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

db: install
	$(MOVIEREC) db upgrade

data: install
	$(MOVIEREC) data fetch ml-100k

import: db data
	$(MOVIEREC) import movielens $$($(PY) -c 'from movierec.settings import get_settings as g; print(g().data_dir)')/ml-100k --if-empty

train: import
	$(MOVIEREC) models current >/dev/null 2>&1 || $(MOVIEREC) train

setup: train

run: setup
	$(MOVIEREC) serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[train,test,bench]"
	rm -f $(VENV)/.bench-installed-*
	touch $@

bench-deps: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { echo "the serving benchmark needs wrk: apt-get install -y wrk"; exit 1; }

# All parts (accuracy, training speed and memory, serving, the ANN index at 1M movies), about 40 minutes
# on 2 cores (the million-movie rows take most of it).
bench: bench-deps data
	$(PY) -m bench.run_all $(BENCH_ARGS)

bench-quick: bench-deps data
	$(PY) -m bench.run_all --quick $(BENCH_ARGS)

bench-accuracy bench-speed bench-serving bench-ann: bench-deps data
	$(PY) -m bench.$(@:bench-%=%) $(BENCH_ARGS)

# MovieLens 100K's later ratings as live traffic against a real server, two versions 50/50
# (docs/online-metrics.md); a few minutes.
bench-replay: install data
	$(PY) -m bench.replay $(BENCH_ARGS)

bench-plots: bench-deps
	$(PY) -m bench.plots

# Import and read speed, binary COPY against the previous importer (PostgreSQL at 127.0.0.1:5432).
# BENCH_ARGS="--ratings 5000000 --headline 25000000" for the figures in docs/data.md (about 20 min).
bench-import: install
	nice -n 10 $(PY) bench/import_speed.py $(BENCH_ARGS)

# The long reliability runs (minutes): more fuzzing, kills and load; prints the table.
soak: install
	$(PY) scripts/soak.py

smoke: install
	$(PY) -m tests.deploy.compose_replay

# docker-compose.yml on a real Docker Engine (docs/deployment.md). compose-up builds what is
# missing (stand-in base images where Docker Hub is out of reach), starts the stack and waits
# until /ready is 200 through the proxy; compose-down stops it and keeps the volumes;
# compose-test runs the whole scenario in a project of its own and prints what held.
compose-up: install
	$(PY) scripts/docker/stack.py up

compose-down:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/docker/stack.py down

compose-test: install
	$(PY) scripts/docker/compose_test.py

clean:
	rm -rf var .pytest_cache
