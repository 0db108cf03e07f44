#!/usr/bin/env bash
# B-VLLM on Qwen2-7B-Instruct + SigLIP-so400m (27x27 patches, 1152-d), the public scripts' values
# (pre-train: 16 frames, LR 1e-3, batch 128; SFT: 32 frames, LR 1e-4, batch 64; cosine, warmup 3%,
# max length 8192, gradient checkpointing) on DeepSpeed ZeRO-3 and bf16. Stage 3 fine-tunes the LLM fully
# (no LoRA in the core), so it takes LLaVA-OV's 1e-5 for the LLM and keeps the code's 1e-4 for the
# Q-Formers (--bvllm_qformer_lr); stage 2 (ours) uses the SFT settings with the LLM frozen. The Q-Formers start from
# LAVIS's InstructBLIP-Vicuna-7B Q-Former; its cross-attention reads 1408-d (EVA) features, so the
# default OVERRIDES add the code's 1152 -> 1408 input adapter. Override any variable from the environment.
LLM=${LLM:-playground/models/Qwen2-7B-Instruct}
VISION=${VISION:-playground/models/siglip-so400m-patch14-384}
QFORMER_TOKENIZER=${QFORMER_TOKENIZER:-playground/models/bert-base-uncased}
QFORMER_INIT=${QFORMER_INIT:-playground/models/LAVIS/instruct_blip_vicuna7b_trimmed.pth}
PRESET=${PRESET:-paper}
OVERRIDES=${OVERRIDES:-{\"qformer_vision_width\": 1408\}}
FOLDER=${FOLDER:-playground/data/videollava}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/videollava_pt/valley_llavaimage.json}           # Valley 703K + LLaVA 558K
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/videollava_sft/videochatgpt_llavaimage_tune.json}
STAGE3_DATA=${STAGE3_DATA:-$FOLDER/videollava_sft/videochatgpt_llavaimage_tune.json} # VideoChatGPT + LLaVA 665K
OUT=${OUT:-checkpoints/bvllm-qwen2-7b}
FRAMES1=${FRAMES1:-16}; FRAMES2=${FRAMES2:-32}; FRAMES3=${FRAMES3:-32}
STAGE1_LR=${STAGE1_LR:-1e-3}; STAGE1_BATCH=${STAGE1_BATCH:-128}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-2}
STAGE2_LR=${STAGE2_LR:-1e-4}; STAGE2_BATCH=${STAGE2_BATCH:-64};  STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-1}
STAGE3_LR=${STAGE3_LR:-1e-5}; STAGE3_BATCH=${STAGE3_BATCH:-64};  STAGE3_PER_DEVICE=${STAGE3_PER_DEVICE:-1}
STAGE3_QFORMER_LR=${STAGE3_QFORMER_LR:-1e-4}
PRECISION=${PRECISION---bf16 True --tf32 True}
RUN_NAME=${RUN_NAME:-bvllm-qwen2-7b}
export LLM VISION QFORMER_TOKENIZER QFORMER_INIT PRESET OVERRIDES FOLDER OUT PRECISION RUN_NAME
