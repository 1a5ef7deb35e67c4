# The two set-up commands README names. Each creates .venv on first use (tools/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench env

env:
	@tools/bootstrap.sh

run: env
	$(PY) -m genstudio

test: env
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint: env
	$(VENV)/bin/ruff check genstudio tests benchmarks
