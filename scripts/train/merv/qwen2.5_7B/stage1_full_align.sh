#!/usr/bin/env bash
# MERV-full stage 1 ("full-align"): projectors + mixer + LLM on caption data; encoders frozen.
# Settings: ./settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../merv_stages.sh"
run_merv_stage full_align "$@"
