#!/usr/bin/env bash
# Equal-budget comparison over every GPU: one shard of every row per GPU, then merge, score and report.
#   bash scripts/eval/compare/compare.sh scripts/eval/compare/runs.yaml [--preset budgets|ratios]
# Environment (optional): CUDA_VISIBLE_DEVICES (GPUs, one shard each; default 0), PYTHON (python3).
# Rerunning resumes: each shard skips the questions it already answered. See docs/compare.md.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 RUNS_YAML [--preset NAME]" >&2
    exit 2
fi
CONFIG=$1
shift
PYTHON=${PYTHON:-python3}
IFS=',' read -ra GPULIST <<< "${CUDA_VISIBLE_DEVICES:-0}"
CHUNKS=${#GPULIST[@]}

pids=()
for idx in $(seq 0 $((CHUNKS - 1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$idx]} "$PYTHON" -m llava.eval.compare --config "$CONFIG" "$@" \
        --num-chunks "$CHUNKS" --chunk-idx "$idx" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
if [[ $failed -ne 0 ]]; then
    echo "a shard failed; rerun this command to resume" >&2
    exit 1
fi
"$PYTHON" -m llava.eval.compare --config "$CONFIG" "$@" --num-chunks "$CHUNKS" --report-only
