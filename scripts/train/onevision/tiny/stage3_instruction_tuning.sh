#!/usr/bin/env bash
# OneVision reference stage 3 (tiny) - instruction tuning - the projector and the LLM; a full HF model is saved.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../stages.sh"
run_stage 3 "$@"
