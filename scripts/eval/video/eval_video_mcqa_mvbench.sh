#!/usr/bin/env bash
# MVBench (20 tasks): chunked inference on every GPU, merge, score (per-task table and mean over tasks).
#   bash scripts/eval/video/eval_video_mcqa_mvbench.sh CKPT
# Data (EVAL_DATA_DIR): json/<task>.json and video/<task folders> as released. See _common.sh.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/MVBench}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/MVBench}/answers/$CKPT_NAME
QUESTIONS=(--benchmark mvbench --question-file "$DATA/json")

run_chunks llava.eval.model_video_mcqa "$OUT" "" "${QUESTIONS[@]}" --video-folder "$DATA/video" "${MODEL_ARGS[@]}"
merge_and_score mcqa "$OUT" "" "${QUESTIONS[@]}"
