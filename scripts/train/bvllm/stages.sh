#!/usr/bin/env bash
# Sourced by the B-VLLM stage scripts: `run_stage 1|2|3 [extra flags]` trains one stage.
#
# The public recipe (zhuqiangLu/B-VLLM scripts/vllava/{pretrain,finetune}.sh) mapped onto our stages:
#   1 pre-train   Q-Former_T (+ its queries), the score projection, LayerNorm and output linears;
#                 Q-Former_S, LLM and tower frozen (the code's "qformer_pretrain_freeze"); adapter only
#   2 sampler     as 1 plus Q-Former_S (the whole adapter), LLM frozen: the core recipe's middle stage,
#                 added so the spatial sampler adapts before the LLM moves (to run the code's two stages,
#                 skip it and set STAGE3_ADAPTER=$OUT/stage1/mm_projector.bin)
#   3 SFT         the whole adapter (both Q-Formers, --bvllm_qformer_lr) + the LLM, fully fine-tuned
#                 (the code's LoRA r128 is not in the core); a full HF model is saved
# Every stage carries all earlier weights over (the code rebuilds the Q-Formers from InstructBLIP in
# SFT and keeps only the query banks and LayerNorms; see bvllm_plugin/README.md).
#
# Settings (environment; the per-scale settings.sh set them):
#   LLM VISION                    model folders (HF format, local)
#   QFORMER_TOKENIZER             BERT tokenizer folder (bert-base-uncased) or "tiny"
#   QFORMER_INIT                  LAVIS instruct_blip_vicuna7b_trimmed.pth (file or folder), or empty
#   PRESET OVERRIDES              --bvllm_preset and --bvllm_overrides (JSON, e.g. an exact budget)
#   FOLDER STAGE{1,2,3}_DATA      media root and annotation files
#   OUT                           stage N writes $OUT/stageN
#   FRAMES{1,2,3}                 frames per video per stage
#   STAGE{N}_LR STAGE3_QFORMER_LR STAGE{N}_BATCH STAGE{N}_PER_DEVICE   learning rates and batches
#   PRECISION EXTRA DS_CONFIG     as in scripts/train/hicom_stages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch.sh"

run_stage() {
    local stage=$1
    shift
    local batch_var="STAGE${stage}_BATCH" per_device_var="STAGE${stage}_PER_DEVICE" lr_var="STAGE${stage}_LR"
    local frames_var="FRAMES${stage}" data_var="STAGE${stage}_DATA"
    local per_device=${!per_device_var}
    local args=(
        --model_name_or_path "$LLM" --vision_tower "$VISION" --version qwen_1_5
        --mm_projector_type bvllm --bvllm_preset "$PRESET" --bvllm_qformer_tokenizer "$QFORMER_TOKENIZER"
        --mm_vision_select_layer -2 --mm_use_im_start_end False --mm_use_im_patch_token False
        --image_folder "$FOLDER" --video_folder "$FOLDER" --num_frames "${!frames_var}" --data_path "${!data_var}"
    )
    stage_args "$OUT/stage$stage" "${RUN_NAME:-bvllm}-stage$stage" "${!batch_var}" "$per_device" "${!lr_var}" 0. \
        8192 800 4
    args+=("${STAGE_ARGS[@]}")
    [[ -z "${OVERRIDES:-}" ]] || args+=(--bvllm_overrides "$OVERRIDES")
    case "$stage" in
        1) args+=(--mm_tunable_parts bvllm_selector,bvllm_linears)
           [[ -z "${QFORMER_INIT:-}" ]] || args+=(--bvllm_qformer_init "$QFORMER_INIT") ;;
        2) args+=(--image_aspect_ratio pad --mm_tunable_parts mm_mlp_adapter
                  --pretrain_mm_mlp_adapter "$OUT/stage1/mm_projector.bin") ;;
        3) args+=(--image_aspect_ratio pad --mm_tunable_parts mm_mlp_adapter,mm_language_model
                  --pretrain_mm_mlp_adapter "${STAGE3_ADAPTER:-$OUT/stage2/mm_projector.bin}")
           [[ -z "${STAGE3_QFORMER_LR:-}" ]] || args+=(--bvllm_qformer_lr "$STAGE3_QFORMER_LR") ;;
        *) echo "run_stage: stage must be 1, 2 or 3, got '$stage'" >&2; return 1 ;;
    esac
    # shellcheck disable=SC2086  # PRECISION and EXTRA are flag lists
    launch "${args[@]}" ${PRECISION-} ${EXTRA-} "$@"
}
