# Two commands: `make demo` and `make test`. Both create or update .venv, install torch==2.13.0 first
# (a local CPU build here; the same pin gives the CUDA build elsewhere), then dlforge itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0

.PHONY: demo test venv install install-dev lint bench results clean

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

install: venv
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[all]"

install-dev: venv
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]"

demo: install
	$(VENV)/bin/dlforge train breast-cancer-mlp

test: install-dev
	$(PY) -m pytest -q -p no:cacheprovider

lint: install-dev
	$(VENV)/bin/ruff check dlforge tests bench scripts

bench: install
	$(PY) bench/trainer_overhead.py

results: install
	$(PY) scripts/results.py

clean:
	rm -rf $(VENV) runs .pytest_cache
