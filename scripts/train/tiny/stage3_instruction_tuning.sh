#!/usr/bin/env bash
# HICom stage 3 (tiny) - instruction tuning: LLM + compressor on video instruction data; a full HF model is saved.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../hicom_stages.sh"
run_stage 3 "$@"
