# Two entry points for a fresh machine: `make app` and `make test` (each sets up .venv first).
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup app test bench lint

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch==2.13.0 is the CPU build on this disk; pinned exactly in pyproject.toml.
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/streamlit run dashboard/streamlit_app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true

test: $(STAMP)
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/evaluate_plan.py

lint: $(STAMP)
	$(VENV)/bin/ruff check engine dashboard tests bench sample_models
	$(VENV)/bin/ruff format --check engine dashboard tests bench sample_models
