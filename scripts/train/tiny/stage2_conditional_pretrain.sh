#!/usr/bin/env bash
# HICom stage 2 (tiny) - conditional pre-training: instruction-followed video descriptions, compressor conditioned on each question; injectors get their own LR.
# Settings: tiny/settings.sh (override any from the environment). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
source "$here/../hicom_stages.sh"
run_stage 2 "$@"
