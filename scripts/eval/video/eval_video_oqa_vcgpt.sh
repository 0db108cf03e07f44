#!/usr/bin/env bash
# VideoChatGPT bench, five dimensions: generic questions (correctness, detail, context), temporal and
# consistency questions; chunked inference on every GPU per question file, merge, then the LLM judge.
#   JUDGE_BASE_URL=http://host:port/v1 JUDGE_MODEL=... bash scripts/eval/video/eval_video_oqa_vcgpt.sh CKPT
# Data (EVAL_DATA_DIR): generic_qa.json, temporal_qa.json, consistency_qa.json, Test_Videos/. See _common.sh.
source "$(dirname "$0")/_common.sh"
DATA=${EVAL_DATA_DIR:-playground/data/eval_video/VideoChatGPT}
OUT=${OUTPUT_DIR:-work_dirs/eval_output/VideoChatGPT}/answers/$CKPT_NAME

for part in generic temporal consistency; do
    QUESTIONS=(--benchmark "vcgpt_$part" --question-file "$DATA/${part}_qa.json")
    run_chunks llava.eval.model_video_oqa "$OUT" "${part}_" "${QUESTIONS[@]}" --video-folder "$DATA/Test_Videos" \
        "${MODEL_ARGS[@]}"
    merge_and_score oqa "$OUT" "${part}_" "${QUESTIONS[@]}"
done
