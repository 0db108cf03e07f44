#!/usr/bin/env bash
# OneVision reference stage 2 (tiny) - knowledge - the projector on instruction-followed descriptions (LLM frozen).
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../stages.sh"
run_stage 2 "$@"
