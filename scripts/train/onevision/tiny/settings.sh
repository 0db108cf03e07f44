#!/usr/bin/env bash
# The OneVision reference at toy scale on a CPU: tiny checkpoints from `python -m llava.toy.tiny`,
# synthetic videos from `python -m llava.toy.synthetic`, 2 DeepSpeed ZeRO-3 ranks over gloo, fp32.
# Any variable can be overridden from the environment (e.g. MAX_STEPS=4 for a smoke run).
TINY=${TINY:-playground/tiny}
LLM=${LLM:-$TINY/qwen2-tiny}
VISION=${VISION:-$TINY/siglip-tiny}
FOLDER=${FOLDER:-playground/data/synthetic}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/stage1.json}
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/stage2.json}
STAGE3_DATA=${STAGE3_DATA:-$FOLDER/stage3.json}
OUT=${OUT:-playground/checkpoints/tiny-onevision}
FRAMES=${FRAMES:-8}; POOL_STRIDE=${POOL_STRIDE:-2}; POOL_MODE=${POOL_MODE:-bilinear}
LAUNCHER=${LAUNCHER:-deepspeed}; NUM_GPUS=${NUM_GPUS:-2}; NNODES=1; PORT=${PORT:-29535}
STAGE1_LR=${STAGE1_LR:-1e-3}; STAGE1_BATCH=${STAGE1_BATCH:-4}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-2}
STAGE2_LR=${STAGE2_LR:-1e-3}; STAGE2_BATCH=${STAGE2_BATCH:-4}; STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-2}
STAGE3_LR=${STAGE3_LR:-1e-3}; STAGE3_BATCH=${STAGE3_BATCH:-4}; STAGE3_PER_DEVICE=${STAGE3_PER_DEVICE:-2}
EPOCHS=${EPOCHS:-3}; WORKERS=${WORKERS:-0}; REPORT_TO=${REPORT_TO:-none}; SAVE_STEPS=${SAVE_STEPS:-10}
WARMUP_RATIO=${WARMUP_RATIO:-0}; MAX_LENGTH=${MAX_LENGTH:-1024}
PRECISION=${PRECISION-}
EXTRA=${EXTRA:-${MAX_STEPS:+--max_steps $MAX_STEPS}}
RUN_NAME=${RUN_NAME:-tiny-onevision}
export PYTHON=${PYTHON:-python}
