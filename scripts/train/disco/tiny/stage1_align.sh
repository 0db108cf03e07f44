#!/usr/bin/env bash
# DisCo stage 1 (tiny) - caption alignment: resampler + VCD/TFC heads train with LM + VCD + TFC losses.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../disco_stages.sh"
run_stage 1 "$@"
