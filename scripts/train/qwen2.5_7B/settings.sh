#!/usr/bin/env bash
# HICom on Qwen2.5-7B-Instruct + SigLIP-so400m: the paper's settings (Table A1), the playground layout.
# Any variable can be overridden from the environment. Run the stage scripts from the repository root.
LLM=${LLM:-playground/models/Qwen2.5-7B-Instruct}
VISION=${VISION:-playground/models/siglip-so400m-patch14-384}
FOLDER=${FOLDER:-playground/data/hicom}
STAGE1_DATA=${STAGE1_DATA:-$FOLDER/pretrain.yaml}                 # LLaVA-Pretrain 558K (images)
STAGE2_DATA=${STAGE2_DATA:-$FOLDER/conditional_pretrain.yaml}     # HICom-248K instruction-followed descriptions
STAGE3_DATA=${STAGE3_DATA:-$FOLDER/it_all_video.yaml}             # video instruction tuning mixture
OUT=${OUT:-checkpoints/hicom-qwen2.5-7b}
PRESET=${PRESET:-paper}
FRAMES=${FRAMES:-32}
STAGE1_LR=${STAGE1_LR:-1e-3};  STAGE1_BATCH=${STAGE1_BATCH:-512}; STAGE1_PER_DEVICE=${STAGE1_PER_DEVICE:-32}
STAGE2_LR=${STAGE2_LR:-1e-4};  STAGE2_INJECTOR_LR=${STAGE2_INJECTOR_LR:-1e-3}
STAGE2_BATCH=${STAGE2_BATCH:-256}; STAGE2_PER_DEVICE=${STAGE2_PER_DEVICE:-8}
STAGE3_LR=${STAGE3_LR:-1e-5};  STAGE3_BATCH=${STAGE3_BATCH:-256}; STAGE3_PER_DEVICE=${STAGE3_PER_DEVICE:-2}
STAGE3_TUNABLE=${STAGE3_TUNABLE:-mm_mlp_adapter,mm_language_model}
PRECISION=${PRECISION---bf16 True --tf32 True}
RUN_NAME=${RUN_NAME:-hicom-qwen2.5-7b}
export LLM VISION FOLDER STAGE1_DATA STAGE2_DATA STAGE3_DATA OUT PRESET FRAMES PRECISION RUN_NAME
