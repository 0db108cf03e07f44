#!/usr/bin/env bash
# Builds the tiny checkpoints and synthetic data if missing, then runs the three B-VLLM stages back to
# back (each consuming the previous stage's output). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
"$PYTHON" -m llava.toy.tiny --out "$TINY"
[[ -f "$STAGE3_DATA" ]] || "$PYTHON" -m llava.toy.synthetic --out "$FOLDER"
for stage in stage1_pretrain stage2_sampler stage3_sft; do
    "$here/$stage.sh"
done
