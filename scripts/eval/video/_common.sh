#!/usr/bin/env bash
# Shared by the eval_video_*.sh drivers (sourced, not run): one inference process per GPU listed in
# CUDA_VISIBLE_DEVICES (each answers one contiguous chunk), then merge and score.
#
# Environment (all optional):
#   CUDA_VISIBLE_DEVICES  GPUs to use, one chunk each (default 0)
#   EVAL_DATA_DIR         the benchmark's data folder (each driver has a default under playground/data/eval_video)
#   OUTPUT_DIR            where answers and reports go (default work_dirs/eval_output/<benchmark>)
#   NUM_FRAMES (32)  CONV_MODE (qwen_1_5)  PROMPT_STYLE (release | lmms)  PARSER_VERSION (legacy | current | release)
#   TORCH_DTYPE           float16 / bfloat16 / float32 (default: bf16 on GPU, fp32 on CPU)
#   MAX_NEW_TOKENS        override the inference default (16 multiple choice, 1024 open-ended)
#   PYTHON (python3)      EXTRA_ARGS: more flags for the inference command
# Rerunning a driver resumes: answered questions are skipped, merge and scoring run again.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 CKPT" >&2
    exit 2
fi
CKPT=${1%/}
CKPT_NAME=$(basename "$CKPT")
if [[ $CKPT_NAME == checkpoint-* ]]; then
    CKPT_NAME="$(basename "$(dirname "$CKPT")")_$CKPT_NAME"
fi
PYTHON=${PYTHON:-python3}
PARSER_VERSION=${PARSER_VERSION:-legacy}
IFS=',' read -ra GPULIST <<< "${CUDA_VISIBLE_DEVICES:-0}"
CHUNKS=${#GPULIST[@]}

MODEL_ARGS=(--model-path "$CKPT" --num-frames "${NUM_FRAMES:-32}" --conv-mode "${CONV_MODE:-qwen_1_5}"
            --prompt-style "${PROMPT_STYLE:-release}")
[[ -n ${TORCH_DTYPE:-} ]] && MODEL_ARGS+=(--torch-dtype "$TORCH_DTYPE")
[[ -n ${MAX_NEW_TOKENS:-} ]] && MODEL_ARGS+=(--max-new-tokens "$MAX_NEW_TOKENS")
read -ra EXTRA <<< "${EXTRA_ARGS:-}"
MODEL_ARGS+=("${EXTRA[@]}")
SCORE_ARGS=()  # drivers may add scoring flags

# chunk_files DIR PREFIX: the answers files of this run's chunks
chunk_files() {
    local idx
    for idx in $(seq 0 $((CHUNKS - 1))); do
        echo "$1/${2}${CHUNKS}_${idx}.jsonl"
    done
}

# run_chunks MODULE DIR PREFIX ARGS...: "python -m MODULE ARGS" once per GPU, one chunk each; fails if any chunk did
run_chunks() {
    local module=$1 dir=$2 prefix=$3 idx pid failed=0
    shift 3
    mkdir -p "$dir"
    local pids=()
    for idx in $(seq 0 $((CHUNKS - 1))); do
        CUDA_VISIBLE_DEVICES=${GPULIST[$idx]} "$PYTHON" -m "$module" "$@" \
            --answers-file "$dir/${prefix}${CHUNKS}_${idx}.jsonl" --num-chunks "$CHUNKS" --chunk-idx "$idx" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    if [[ $failed -ne 0 ]]; then
        echo "$0: some chunks failed (see above); rerun to resume them" >&2
        exit 1
    fi
}

# merge_and_score KIND DIR PREFIX QUESTION_ARGS...: merge the chunks and score (mcqa) or judge (oqa), in one process
merge_and_score() {
    local kind=$1 dir=$2 prefix=$3
    shift 3
    local chunks
    mapfile -t chunks < <(chunk_files "$dir" "$prefix")
    if [[ $kind == mcqa ]]; then
        "$PYTHON" -m llava.eval.eval_video_mcqa "$@" --answers-file "$dir/${prefix}merge.jsonl" --merge-from "${chunks[@]}" \
            --parser-version "$PARSER_VERSION" --report "$dir/${prefix}report_${PARSER_VERSION}.json" "${SCORE_ARGS[@]}"
    else
        "$PYTHON" -m llava.eval.eval_oqa_judge "$@" --answers-file "$dir/${prefix}merge.jsonl" --merge-from "${chunks[@]}" \
            --report "$dir/${prefix}judge_report.json"
    fi
}
