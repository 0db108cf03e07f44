#!/usr/bin/env bash
# B-VLLM at toy scale on a CPU: tiny checkpoints (`python -m llava.toy.tiny`), synthetic videos
# (`python -m llava.toy.synthetic`), the in-code tiny Q-Former tokenizer, 2 DeepSpeed ZeRO-3 ranks over
# gloo, fp32. B-VLLM conditions every item on its question, so pre-training reads the synthetic
# instruction-followed descriptions (stage1.json's captions have no question).
TINY=${TINY:-playground/tiny}
LLM=${LLM:-$TINY/qwen2-tiny}
VISION=${VISION:-$TINY/siglip-tiny}
QFORMER_TOKENIZER=${QFORMER_TOKENIZER:-tiny}
QFORMER_INIT=${QFORMER_INIT:-}
PRESET=${PRESET:-tiny}
OVERRIDES=${OVERRIDES:-}
FOLDER=${FOLDER:-playground/data/synthetic}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/stage2.json}
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/stage2.json}
STAGE3_DATA=${STAGE3_DATA:-$FOLDER/stage3.json}
OUT=${OUT:-playground/checkpoints/tiny-bvllm}
FRAMES1=${FRAMES1:-8}; FRAMES2=${FRAMES2:-8}; FRAMES3=${FRAMES3:-8}
LAUNCHER=${LAUNCHER:-deepspeed}; NUM_GPUS=${NUM_GPUS:-2}; NNODES=1; PORT=${PORT:-29541}
STAGE1_LR=${STAGE1_LR:-1e-3}; STAGE1_BATCH=${STAGE1_BATCH:-4}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-2}
STAGE2_LR=${STAGE2_LR:-1e-3}; STAGE2_BATCH=${STAGE2_BATCH:-4}; STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-2}
STAGE3_LR=${STAGE3_LR:-1e-3}; STAGE3_BATCH=${STAGE3_BATCH:-4}; STAGE3_PER_DEVICE=${STAGE3_PER_DEVICE:-2}
STAGE3_QFORMER_LR=${STAGE3_QFORMER_LR:-}
EPOCHS=${EPOCHS:-3}; WORKERS=${WORKERS:-0}; REPORT_TO=${REPORT_TO:-none}; SAVE_STEPS=${SAVE_STEPS:-10}
WARMUP_RATIO=${WARMUP_RATIO:-0}; MAX_LENGTH=${MAX_LENGTH:-1024}; GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-False}
PRECISION=${PRECISION-}
EXTRA=${EXTRA:-${MAX_STEPS:+--max_steps $MAX_STEPS}}
RUN_NAME=${RUN_NAME:-tiny-bvllm}
export PYTHON=${PYTHON:-python}
