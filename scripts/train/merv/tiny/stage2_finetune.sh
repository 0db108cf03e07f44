#!/usr/bin/env bash
# MERV fine-tuning: projectors + mixer + LLM on instruction data; encoders frozen. RECIPE=base (merv-base,
# the only stage, from the LLM) or RECIPE=full (after stage1_full_align.sh, from its output).
# Settings: ./settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../merv_stages.sh"
run_merv_stage finetune "$@"
