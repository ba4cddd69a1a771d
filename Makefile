# recsys-retrain: `make run` sets everything up and runs the weekly retrain DAG; `make test` runs all tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Embedded defaults: everything lives under this checkout.
export AIRFLOW_HOME ?= $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__API__HOST ?= 127.0.0.1
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export RECSYS_HOME ?= $(CURDIR)/var
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning
KEY_FILE := $(RECSYS_HOME)/secrets/pseudonym.key

# How many of the lake's newest weeks `make run` retrains on, oldest first (each one DAG run); `all`: every
# week of raw events in the lake (what `make history` does).
RUN_WEEKS ?= 2
# Week to end on (any day; the last complete week before it is used). Default: the lake's newest week of
# raw events; on an empty lake, today (synthetic data is generated up to it).
UNTIL ?=
UNTIL_ARG := $(if $(UNTIL),--until $(UNTIL))
# `make history FROM=YYYY-MM-DD`: leave out the lake's weeks before this day's week.
FROM ?=
FROM_ARG := $(if $(FROM),--from $(FROM))

.PHONY: help install run history land ab-demo test lint ui generate clean bench

help:
	@echo "make run    set up (venv, Airflow DB, data) and run the weekly retrain DAG end to end"
	@echo "make land DATA=PATH   land your history: a MovieLens folder, or events.csv + items.csv [+ users.csv]"
	@echo "make history  every week of the lake through the weekly DAG, oldest first (FROM=, UNTIL= to cut)"
	@echo "make test   run the whole test suite"
	@echo "make ab-demo  an A/B test on simulated users: two weekly runs, a week of feedback, the readout"
	@echo "make ui     Airflow UI on http://127.0.0.1:8080 and MLflow UI on http://127.0.0.1:5000"
	@echo "make lint   ruff and the layer contract (lint-imports)"
	@echo "make bench  benchmarks against stock Spark (writes docs/benchmarks.md)"

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON_BIN) >/dev/null || { echo "error: $(PYTHON_BIN) not found (Python 3.11 is required)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON_BIN) -m venv $(VENV)
	@echo "installing the pinned requirements into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --upgrade pip \
	   && $(BIN)/python -m pip install -r requirements.txt \
	   && $(BIN)/python -m pip install --no-deps -e . ; } > $(VENV)/install.log 2>&1 \
	   || { tail -30 $(VENV)/install.log; echo "error: installing requirements failed (full log: $(VENV)/install.log)"; exit 1; }
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

$(KEY_FILE):
	@mkdir -p $(dir $(KEY_FILE)) && chmod 700 $(dir $(KEY_FILE))
	@umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_hex(32))" > $(KEY_FILE)
	@echo "created a local pseudonymization key in $(KEY_FILE) (keep it secret; see README)"

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@echo "Airflow metadata DB ready: $(AIRFLOW_HOME)/airflow.db"

generate: $(STAMP)
	$(BIN)/recsys generate $(UNTIL_ARG)

# Each week is one `airflow dags test` run; a run that fails, or that leaves no record of its week (it did
# not do its work), is a one-line error and a non-zero exit: at once, or with KEEP_GOING=1 (make history)
# after the remaining weeks, naming every week that failed.
RUN_DAGS = export RECSYS_PSEUDONYM_KEY="$$(cat $(KEY_FILE))"; \
	days="$$($(BIN)/recsys run-dates $(UNTIL_ARG) $(FROM_ARG) --weeks $(RUN_WEEKS))" || exit 2; \
	test -n "$$days" || { echo "error: no week to run (RUN_WEEKS=$(RUN_WEEKS) FROM=$(FROM) UNTIL=$(UNTIL))"; exit 2; }; \
	mkdir -p $(RECSYS_HOME)/logs; n=$$(echo $$days | wc -w); i=0; failed=""; \
	for day in $$days; do \
	  i=$$((i + 1)); log=$(RECSYS_HOME)/logs/dags-test-$$day.log; why=""; \
	  echo "==> [$$i/$$n] airflow dags test weekly_retrain $$day (log: $$log)"; \
	  $(BIN)/airflow dags test weekly_retrain $$day > $$log 2>&1; rc=$$?; \
	  if [ $$rc -ne 0 ]; then \
	    why=$$(grep -h "\[recsys\] task_failed" $$log | tail -1 | sed -e 's/.*| error: //' -e 's/ \[recsys\.notify\].*//'); \
	    test -n "$$why" || { tail -30 $$log; why="exit $$rc"; }; \
	  elif ! grep -q "DagRun Finished.*state=success" $$log; then why="the run did not finish successfully"; \
	  elif ! $(BIN)/recsys summary --date $$day $(SUMMARY_ARGS); then why="the run recorded no work for its week"; fi; \
	  if [ -n "$$why" ]; then \
	    echo "error: the DAG run of $$day failed: $$why (log: $$log)"; \
	    [ "$(KEEP_GOING)" = 1 ] || exit 1; failed="$$failed $$day"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "error: $$(echo $$failed | wc -w) of $$n DAG runs failed:$$failed (why: the error lines above)"; exit 1; fi

run: $(STAMP) $(KEY_FILE) $(AIRFLOW_HOME)/airflow.db
	@test -n "$$(ls -A $(RECSYS_HOME)/lake/raw/events 2>/dev/null)" || $(BIN)/recsys generate $(UNTIL_ARG)
	@$(RUN_DAGS)

# Bring your own data: land a history, then run every week of it through Airflow, oldest first.
land: $(STAMP)
	@test -n "$(DATA)" || { echo "error: give DATA=PATH: a MovieLens folder (ml-100k, ml-1m, ml-latest-small), or a folder with events.csv, items.csv and optionally users.csv"; exit 2; }
	@if ls "$(DATA)"/events*.csv* >/dev/null 2>&1; then \
	  $(BIN)/recsys land-csv --events "$$(ls "$(DATA)"/events*.csv* | head -1)" --items "$$(ls "$(DATA)"/items*.csv* | head -1)" \
	    $$(ls "$(DATA)"/users*.csv* 2>/dev/null | head -1 | sed 's/^/--users /'); \
	else $(BIN)/recsys load-movielens "$(DATA)"; fi

history: $(STAMP) $(KEY_FILE) $(AIRFLOW_HOME)/airflow.db
	@test -n "$$(ls -A $(RECSYS_HOME)/lake/raw/events 2>/dev/null)" || { echo "error: the lake $(RECSYS_HOME)/lake has no raw events: land a history first (make land DATA=PATH)"; exit 2; }
	@$(MAKE) --no-print-directory run RUN_WEEKS=all SUMMARY_ARGS=--brief KEEP_GOING=1; rc=$$?; \
	$(BIN)/recsys registry; exit $$rc

# The A/B loop on a lake of its own (var/ab-demo): weekly_retrain for RUN_WEEKS weeks with an
# experiment in promotion mode ab, then the simulated users' week of the last lists, then ab_readout.
AB_HOME := $(RECSYS_HOME)/ab-demo
ab-demo: $(STAMP) $(KEY_FILE) $(AIRFLOW_HOME)/airflow.db
	@mkdir -p $(AB_HOME)/logs
	@echo '{"promotion": "ab", "experiment": {"experiment_id": "picks-demo", "salt": "demo"}}' > $(AB_HOME)/ab.json
	@export RECSYS_HOME=$(AB_HOME) RECSYS_CONFIG=$(AB_HOME)/ab.json RECSYS_MODEL_NAME=recsys_ab_demo \
	  RECSYS_PSEUDONYM_KEY="$$(cat $(KEY_FILE))"; set -e; \
	test -n "$$(ls -A $(AB_HOME)/lake/raw/events 2>/dev/null)" || $(BIN)/recsys generate $(UNTIL_ARG); \
	for day in $$($(BIN)/recsys run-dates $(UNTIL_ARG) --weeks $(RUN_WEEKS)); do \
	  echo "==> airflow dags test weekly_retrain $$day (log: $(AB_HOME)/logs/weekly-$$day.log)"; \
	  $(BIN)/airflow dags test weekly_retrain $$day > $(AB_HOME)/logs/weekly-$$day.log 2>&1 \
	    || { tail -30 $(AB_HOME)/logs/weekly-$$day.log; exit 1; }; \
	  $(BIN)/recsys summary --date $$day | grep -E "registered|A/B test" || true; \
	done; \
	shown=$$(date -u -d "$$day + 7 days" +%F); \
	$(BIN)/recsys simulate-feedback --date $$shown; \
	echo "==> airflow dags test ab_readout $$shown (log: $(AB_HOME)/logs/ab-readout-$$shown.log)"; \
	$(BIN)/airflow dags test ab_readout $$shown > $(AB_HOME)/logs/ab-readout-$$shown.log 2>&1 \
	  || { tail -30 $(AB_HOME)/logs/ab-readout-$$shown.log; exit 1; }; \
	$(BIN)/recsys ab-status --date $$shown

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --no-loadscope-reorder --durations=25

# Benchmarks (figures printed and written to docs/benchmarks.md); run on a quiet machine.
bench: $(STAMP)
	$(BIN)/python -m bench.recommend
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.scaling
	$(BIN)/python -m bench.dag
	$(BIN)/python -m bench.hybrid
	$(BIN)/python -m bench.abtest
	$(BIN)/python -m bench.ceiling
	$(BIN)/python -m bench.gate_users

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

ui: $(STAMP) $(KEY_FILE) $(AIRFLOW_HOME)/airflow.db
	@echo "MLflow UI:  http://127.0.0.1:5000   Airflow UI: http://127.0.0.1:8080 (user/password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	@export PATH="$(BIN):$$PATH" RECSYS_PSEUDONYM_KEY="$$(cat $(KEY_FILE))"; \
	MLFLOW_URI="$$($(BIN)/recsys settings --get mlflow_tracking_uri)"; \
	$(BIN)/mlflow ui --backend-store-uri "$$MLFLOW_URI" --host 127.0.0.1 --port 5000 & mlflow_pid=$$!; \
	trap "kill $$mlflow_pid 2>/dev/null" EXIT INT TERM; \
	$(BIN)/airflow standalone

clean:
	rm -rf $(RECSYS_HOME) $(AIRFLOW_HOME)
