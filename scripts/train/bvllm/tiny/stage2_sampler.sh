#!/usr/bin/env bash
# B-VLLM stage 2 (tiny) - sampler - the whole adapter (both Q-Formers) on instruction-followed video data, LLM frozen; saves mm_projector.bin.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../stages.sh"
run_stage 2 "$@"
