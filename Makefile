# The two set-up commands README names. Each creates .venv on first use (tools/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench env bundle check-bundle

env:
	@tools/bootstrap.sh

run: env
	$(PY) -m genstudio

test: env
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q --durations=15

lint: env
	$(VENV)/bin/ruff check genstudio tests benchmarks

# A runnable one-folder Linux app in build/bundle/dist/genstudio/ (PyInstaller, packaging/genstudio.spec),
# then tools/check_bundle.py starts it offscreen. Slow (minutes) and large; not part of `make test`.
BUNDLE ?= build/bundle

bundle: env
	$(PY) -m pip install --disable-pip-version-check -q -e ".[bundle]"
	$(PY) -m PyInstaller packaging/genstudio.spec --noconfirm --clean \
		--distpath $(BUNDLE)/dist --workpath $(BUNDLE)/work
	$(PY) tools/check_bundle.py $(BUNDLE)/dist/genstudio

check-bundle: env
	$(PY) tools/check_bundle.py $(BUNDLE)/dist/genstudio
