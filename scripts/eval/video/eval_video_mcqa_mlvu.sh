#!/usr/bin/env bash
# MLVU (dev, multiple choice): chunked inference on every GPU, merge, score (M-Avg over question types).
#   bash scripts/eval/video/eval_video_mcqa_mlvu.sh CKPT
# Data (EVAL_DATA_DIR): json/{1_plotQA,...,7_topic_reasoning}.json and video/<n_type>/. See _common.sh.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/MLVU}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/MLVU}/answers/$CKPT_NAME
QUESTIONS=(--benchmark mlvu --question-file "$DATA/json")

run_chunks llava.eval.model_video_mcqa "$OUT" "" "${QUESTIONS[@]}" --video-folder "$DATA/video" "${MODEL_ARGS[@]}"
merge_and_score mcqa "$OUT" "" "${QUESTIONS[@]}"
