#!/usr/bin/env bash
# ActivityNet-QA: chunked inference on every GPU, merge, then the LLM judge (accuracy and score).
#   JUDGE_BASE_URL=http://host:port/v1 JUDGE_MODEL=... [JUDGE_API_KEY=...] \
#   bash scripts/eval/video/eval_video_oqa_activitynet.sh CKPT
# Data (EVAL_DATA_DIR): test_q.json, test_a.json, all_test/v_<video_name>.mp4. See _common.sh.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/ActivityNet-QA}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/ActivityNet-QA}/answers/$CKPT_NAME
QUESTIONS=(--benchmark activitynet --question-file "$DATA/test_q.json" --gt-file "$DATA/test_a.json")

run_chunks llava.eval.model_video_oqa "$OUT" "" "${QUESTIONS[@]}" --video-folder "$DATA/all_test" "${MODEL_ARGS[@]}"
merge_and_score oqa "$OUT" "" "${QUESTIONS[@]}"
