#!/usr/bin/env bash
# MERV on Qwen2.5-7B-Instruct (MERV's own Qwen2.5 backbone, here as llava_qwen) with its four encoders:
# MERV's settings (merv/conf/models.py merv-base / merv-full, TRAINING.md). Override from the environment.
# The tower folder lists the encoders (see merv_plugin/README.md): LanguageBind-Video as a CLIP ViT-L/14
# folder, DINOv2-L/14-reg4 at 224 px, ViViT-B 16x2 (32 frames), SigLIP-B/16-224; 16 LLM frames.
LLM=${LLM:-playground/models/Qwen2.5-7B-Instruct}
TOWER=${TOWER:-playground/models/merv-tower}
FOLDER=${FOLDER:-playground/data/merv}
ALIGN_DATA=${ALIGN_DATA:-$FOLDER/stage1.yaml}        # 558K LAION/CC/SBU captions + 702K Valley video captions
FINETUNE_DATA=${FINETUNE_DATA:-$FOLDER/stage2.yaml}  # 665K LLaVA instructions + 100K VideoChatGPT
OUT=${OUT:-checkpoints/merv-qwen2.5-7b}
GRID=${GRID:-16,8,8}; FUSION=${FUSION:-cross_attention_avg_lq}; QUERY_DIM=${QUERY_DIM:-3072}
FRAMES=${FRAMES:-16}
ALIGN_LR=${ALIGN_LR:-1e-4}; ALIGN_WD=${ALIGN_WD:-0.}; ALIGN_BATCH=${ALIGN_BATCH:-256}; ALIGN_PER_DEVICE=${ALIGN_PER_DEVICE:-8}
FINETUNE_LR=${FINETUNE_LR:-2e-5}; FINETUNE_WD=${FINETUNE_WD:-0.1}; FINETUNE_BATCH=${FINETUNE_BATCH:-128}
FINETUNE_PER_DEVICE=${FINETUNE_PER_DEVICE:-2}
PRECISION=${PRECISION---bf16 True --tf32 True}
RUN_NAME=${RUN_NAME:-merv-qwen2.5-7b}
export PYTHON=${PYTHON:-python}
