#!/usr/bin/env bash
# MERV at toy scale on a CPU: the tiny Qwen2 from `python -m llava.toy.tiny`, the tiny four-encoder tower
# from `python -m merv_plugin.tiny`, synthetic videos from `python -m llava.toy.synthetic`; 2 DeepSpeed
# ZeRO-3 ranks over gloo, fp32. Any variable can be overridden from the environment.
TINY=${TINY:-playground/tiny}
LLM=${LLM:-$TINY/qwen2-tiny}
TOWER=${TOWER:-$TINY/merv-tower-tiny}
FOLDER=${FOLDER:-playground/data/synthetic}
ALIGN_DATA=${ALIGN_DATA:-$FOLDER/stage1.json}
FINETUNE_DATA=${FINETUNE_DATA:-$FOLDER/stage3.json}
OUT=${OUT:-playground/checkpoints/tiny-merv}
GRID=${GRID:-2,2,2}; FUSION=${FUSION:-cross_attention_avg_lq}; QUERY_DIM=${QUERY_DIM:-24}
FRAMES=${FRAMES:-4}
LAUNCHER=${LAUNCHER:-deepspeed}; NUM_GPUS=${NUM_GPUS:-2}; NNODES=1; PORT=${PORT:-29543}
ALIGN_LR=${ALIGN_LR:-1e-3}; ALIGN_WD=${ALIGN_WD:-0.}; ALIGN_BATCH=${ALIGN_BATCH:-4}; ALIGN_PER_DEVICE=${ALIGN_PER_DEVICE:-2}
FINETUNE_LR=${FINETUNE_LR:-1e-3}; FINETUNE_WD=${FINETUNE_WD:-0.1}; FINETUNE_BATCH=${FINETUNE_BATCH:-4}
FINETUNE_PER_DEVICE=${FINETUNE_PER_DEVICE:-2}
EPOCHS=${EPOCHS:-3}; WORKERS=${WORKERS:-0}; REPORT_TO=${REPORT_TO:-none}; SAVE_STEPS=${SAVE_STEPS:-10}
WARMUP_RATIO=${WARMUP_RATIO:-0}; MAX_LENGTH=${MAX_LENGTH:-1024}
PRECISION=${PRECISION-}
EXTRA=${EXTRA:-${MAX_STEPS:+--max_steps $MAX_STEPS}}
RUN_NAME=${RUN_NAME:-tiny-merv}
export PYTHON=${PYTHON:-python}
