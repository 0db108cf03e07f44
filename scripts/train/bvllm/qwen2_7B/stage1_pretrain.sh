#!/usr/bin/env bash
# B-VLLM stage 1 (qwen2_7B) - pre-train - Q-Former_T, score projection, LayerNorm and output linears; Q-Former_S, LLM and tower frozen; saves mm_projector.bin.
# Settings: qwen2_7B/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../stages.sh"
run_stage 1 "$@"
