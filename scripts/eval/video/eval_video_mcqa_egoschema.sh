#!/usr/bin/env bash
# EgoSchema: chunked inference on every GPU, merge, score the 500-question subset, and write the full-set
# submission JSON for the benchmark's server.
#   bash scripts/eval/video/eval_video_mcqa_egoschema.sh CKPT
# Data (EVAL_DATA_DIR): questions.json, subset_answers.json, good_clips_git/<q_uid>.mp4. See _common.sh.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/EgoSchema}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/EgoSchema}/answers/$CKPT_NAME
QUESTIONS=(--benchmark egoschema --question-file "$DATA/questions.json" --gt-file "$DATA/subset_answers.json")

run_chunks llava.eval.model_video_mcqa "$OUT" "" "${QUESTIONS[@]}" --video-folder "$DATA/good_clips_git" "${MODEL_ARGS[@]}"
SCORE_ARGS=(--egoschema-submission "$OUT/submission.json")
merge_and_score mcqa "$OUT" "" "${QUESTIONS[@]}"
