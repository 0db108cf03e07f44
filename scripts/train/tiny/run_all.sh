#!/usr/bin/env bash
# Builds the tiny checkpoints and synthetic data if missing, then runs the three stages back to back
# (each consuming the previous stage's output). Run from the repository root.
set -euo pipefail
here=$(dirname "$0")
source "$here/settings.sh"
"$PYTHON" -m llava.toy.tiny --out "$TINY"
[[ -f "$STAGE3_DATA" ]] || "$PYTHON" -m llava.toy.synthetic --out "$FOLDER"
for stage in stage1_align stage2_conditional_pretrain stage3_instruction_tuning; do
    "$here/$stage.sh"
done
