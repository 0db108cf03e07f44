#!/usr/bin/env bash
# B-VLLM stage 3 (qwen2_7B) - SFT - the adapter and the LLM (full fine-tuning); a full HF model is saved.
# Settings: qwen2_7B/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../stages.sh"
run_stage 3 "$@"
