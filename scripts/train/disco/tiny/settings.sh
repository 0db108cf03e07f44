#!/usr/bin/env bash
# DisCo's two stages at toy scale on a CPU: tiny checkpoints from `python -m llava.toy.tiny` and
# synthetic videos from `python -m llava.toy.synthetic` (stage-1 captions carry "instances"), 2 DeepSpeed
# ZeRO-3 ranks over gloo, fp32. Any variable can be overridden from the environment.
TINY=${TINY:-playground/tiny}
LLM=${LLM:-$TINY/qwen2-tiny}
VISION=${VISION:-$TINY/siglip-tiny}
FOLDER=${FOLDER:-playground/data/synthetic}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/stage1.json}
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/stage3.json}
OUT=${OUT:-playground/checkpoints/tiny-disco}
PRESET=${PRESET:-tiny}
FRAMES=${FRAMES:-8}
LAUNCHER=${LAUNCHER:-deepspeed}; NUM_GPUS=${NUM_GPUS:-2}; NNODES=1; PORT=${PORT:-29533}
STAGE1_LR=${STAGE1_LR:-1e-3}; STAGE1_BATCH=${STAGE1_BATCH:-4}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-2}
STAGE2_LR=${STAGE2_LR:-1e-3}; STAGE2_BATCH=${STAGE2_BATCH:-4}; STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-2}
STAGE1_TUNABLE=${STAGE1_TUNABLE:-mm_mlp_adapter}
STAGE2_TUNABLE=${STAGE2_TUNABLE:-mm_mlp_adapter,mm_language_model}
EPOCHS=${EPOCHS:-3}; WORKERS=${WORKERS:-0}; REPORT_TO=${REPORT_TO:-none}; SAVE_STEPS=${SAVE_STEPS:-10}
WARMUP_RATIO=${WARMUP_RATIO:-0}; MAX_LENGTH=${MAX_LENGTH:-1024}
PRECISION=${PRECISION-}
EXTRA=${EXTRA:-${MAX_STEPS:+--max_steps $MAX_STEPS}}
RUN_NAME=${RUN_NAME:-tiny-disco}
export PYTHON=${PYTHON:-python}
