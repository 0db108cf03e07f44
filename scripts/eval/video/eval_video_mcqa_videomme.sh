#!/usr/bin/env bash
# Video-MME without and with subtitles: chunked inference on every GPU, merge, score.
#   bash scripts/eval/video/eval_video_mcqa_videomme.sh CKPT
# Data (EVAL_DATA_DIR): the lmms-eval/Video-MME parquet (or JSON rows, QUESTION_FILE), data/<videoID>.mp4,
# subtitle/<videoID>.srt. See _common.sh for the other settings.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/videomme}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/videomme}/answers/$CKPT_NAME
QUESTIONS=(--benchmark videomme --question-file "${QUESTION_FILE:-$DATA/test-00000-of-00001.parquet}")

run_chunks llava.eval.model_video_mcqa "$OUT" "" "${QUESTIONS[@]}" --video-folder "$DATA/data" "${MODEL_ARGS[@]}"
merge_and_score mcqa "$OUT" "" "${QUESTIONS[@]}"
run_chunks llava.eval.model_video_mcqa "$OUT" "sub_" "${QUESTIONS[@]}" --video-folder "$DATA/data" \
    --subtitle-folder "$DATA/subtitle" "${MODEL_ARGS[@]}"
merge_and_score mcqa "$OUT" "sub_" "${QUESTIONS[@]}"
