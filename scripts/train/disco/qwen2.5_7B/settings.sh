#!/usr/bin/env bash
# DisCo on Qwen2.5-7B-Instruct + SigLIP-so400m (the project's base; DisCo's own is InternVideo2 +
# Mistral-7B). The prototype's layout (96 queries); LRs and batches are not public for DisCo: these are
# the project's usual alignment / instruction-tuning values. Any variable can be overridden.
LLM=${LLM:-playground/models/Qwen2.5-7B-Instruct}
VISION=${VISION:-playground/models/siglip-so400m-patch14-384}
FOLDER=${FOLDER:-playground/data/disco}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/captions_with_instances.yaml}   # dense captions + their instance lists
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/instruction.yaml}               # video instruction tuning mixture
OUT=${OUT:-checkpoints/disco-qwen2.5-7b}
PRESET=${PRESET:-prototype}
FRAMES=${FRAMES:-32}
STAGE1_LR=${STAGE1_LR:-1e-4}; STAGE1_BATCH=${STAGE1_BATCH:-256}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-4}
STAGE2_LR=${STAGE2_LR:-2e-5}; STAGE2_BATCH=${STAGE2_BATCH:-128}; STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-2}
STAGE1_TUNABLE=${STAGE1_TUNABLE:-mm_mlp_adapter}
STAGE2_TUNABLE=${STAGE2_TUNABLE:-mm_mlp_adapter,mm_language_model}
PRECISION=${PRECISION---bf16 True --tf32 True}
RUN_NAME=${RUN_NAME:-disco-qwen2.5-7b}
export LLM VISION FOLDER STAGE1_DATA STAGE2_DATA OUT PRESET FRAMES PRECISION RUN_NAME
