# Fresh machine: `make demo` (the embedded default end to end: the toy zoo's headline rows, one seed) and
# `make test` (the test suite). `make demo-zoo` runs every row of the zoo over 3 seeds.
# Targets are idempotent: the environment is built once and rebuilt only when setup.py changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines get this torch build (a local CPU wheel here); machines with an NVIDIA driver keep
# whatever torch the user installs, or pip's default CUDA build.
TORCH_CPU_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-zoo walkthrough tiny clean-venv eval-deps

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "no NVIDIA driver found: installing $(TORCH_CPU_PIN) (CPU)"; \
		$(PY) -m pip install "$(TORCH_CPU_PIN)"; \
	fi
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m llava.toy.zoo --out playground/demo

demo-zoo: $(STAMP)
	$(PY) -m llava.toy.zoo --out playground/demo --subset all --seeds 0 1 2

# one video through untrained tiny models, printing token counts (no training): OneVision's path and
# the HICom projector (paper preset)
walkthrough: $(STAMP)
	$(PY) -m llava.toy.walkthrough --out playground/walkthrough \
		--projector hicom --projector-config '{"hicom_preset": "paper"}'

tiny: $(STAMP)
	$(PY) -m llava.toy.tiny --out playground/tiny

# lmms-eval (the `eval` extra) into $(VENV), keeping the torch it has: pip gets that exact torch as a
# constraint. lmms-eval 0.7.3 imports filelock._api, which filelock 4 removed (hence EVAL_PINS). PyPI's
# torchvision is made for PyPI's torch only: when the one pip picks does not import beside this torch (a CPU
# build), it is removed; lmms-eval's llava_vid and llava_onevision wrappers do not use it.
EVAL_PINS ?= filelock>=3.24.2,<4
EVAL_CONSTRAINTS := $(VENV)/eval-constraints.txt

eval-deps: $(STAMP)
	$(PY) -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(EVAL_CONSTRAINTS)
	@echo "keeping $$(cat $(EVAL_CONSTRAINTS))"
	$(PY) -m pip install -e ".[eval]" "$(EVAL_PINS)" -c $(EVAL_CONSTRAINTS)
	@if $(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)" && \
		! $(PY) -c "import torchvision" >/dev/null 2>&1; then \
		echo "torchvision does not import beside $$(cat $(EVAL_CONSTRAINTS)) (no build of it for this torch on PyPI): removing it"; \
		$(PY) -m pip uninstall -y torchvision; \
	fi
	$(PY) -c "from importlib.metadata import version; import filelock._api, lmms_eval.evaluator, lmms_eval.models.simple.llava_vid; \
		now = 'torch==' + version('torch'); was = open('$(EVAL_CONSTRAINTS)').read().strip(); \
		assert now == was, f'torch changed: {was} -> {now}'"
	@echo "lmms-eval $$($(PY) -c "from importlib.metadata import version; print(version('lmms_eval'))") installed; $$(cat $(EVAL_CONSTRAINTS)) kept"

clean-venv:
	rm -rf $(VENV)
