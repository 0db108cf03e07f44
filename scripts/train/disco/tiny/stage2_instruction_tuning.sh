#!/usr/bin/env bash
# DisCo stage 2 (tiny) - instruction tuning: LM loss only (VCD/TFC weights 0), from stage 1's adapter.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../disco_stages.sh"
run_stage 2 "$@"
