#!/usr/bin/env bash
# HICom stage 1 (qwen2.5_7B) - alignment: the compressor maps SigLIP features into the LLM, no instruction injection (images).
# Settings: qwen2.5_7B/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../hicom_stages.sh"
run_stage 1 "$@"
