# Fresh machine: `make demo` (the embedded default end to end: the toy-scale ablation, one seed) and
# `make test` (the test suite). `make demo-seeds` runs the ablation over 3 seeds (about 3x longer).
# Targets are idempotent: the environment is built once and rebuilt only when setup.py changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines get this torch build (a local CPU wheel here); machines with an NVIDIA driver keep
# whatever torch the user installs, or pip's default CUDA build.
TORCH_CPU_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-seeds walkthrough tiny clean-venv

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
	$(PY) -m hicom_plugin.tools.demo --out playground/demo

demo-seeds: $(STAMP)
	$(PY) -m hicom_plugin.tools.demo --out playground/demo --seeds 0 1 2

# one video through untrained tiny models, printing token counts (no training): OneVision's path and
# the HICom projector (paper preset)
walkthrough: $(STAMP)
	$(PY) -m llava.toy.walkthrough --out playground/walkthrough \
		--projector hicom --projector-config '{"hicom_preset": "paper"}'

tiny: $(STAMP)
	$(PY) -m llava.toy.tiny --out playground/tiny

clean-venv:
	rm -rf $(VENV)
