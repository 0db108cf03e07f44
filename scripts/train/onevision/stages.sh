#!/usr/bin/env bash
# Sourced by the OneVision stage scripts: `run_stage 1|2|3 [extra flags]` trains one stage of the
# uncompressed reference: SigLIP, OneVision's 2x2 pooling of each frame's patch grid, the 2-layer MLP
# projector (mlp2x_gelu), the LLM. No method plugin is involved.
#
#   1 align        the projector on captions (LLM frozen), LLaVA's plain template
#   2 knowledge    the projector on instruction-followed descriptions (LLM frozen): the analogue of
#                  OneVision's middle stage, kept adapter-only so the reference trains what the
#                  compressors' middle stages train
#   3 instruction  the projector and the LLM on instruction data; a full HF model is saved
#
# Settings (environment; the per-scale settings.sh set them):
#   LLM VISION               model folders (HF format, local)
#   FOLDER STAGE{1,2,3}_DATA media root and annotation files
#   OUT                      stage N writes $OUT/stageN; stages 2-3 start from $OUT/stage{N-1}/mm_projector.bin
#   FRAMES POOL_STRIDE POOL_MODE   frames per video and OneVision's per-frame pooling (2, bilinear)
#   STAGE{N}_LR STAGE{N}_BATCH STAGE{N}_PER_DEVICE   learning rates and batches
#   PRECISION EXTRA DS_CONFIG as in scripts/train/hicom_stages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch.sh"

run_stage() {
    local stage=$1
    shift
    local batch_var="STAGE${stage}_BATCH" per_device_var="STAGE${stage}_PER_DEVICE" lr_var="STAGE${stage}_LR"
    local per_device=${!per_device_var}
    local args=(
        --model_name_or_path "$LLM" --vision_tower "$VISION" --mm_projector_type mlp2x_gelu
        --mm_spatial_pool_stride "$POOL_STRIDE" --mm_spatial_pool_mode "$POOL_MODE" --mm_vision_select_layer -2
        --mm_use_im_start_end False --mm_use_im_patch_token False
        --image_folder "$FOLDER" --video_folder "$FOLDER" --num_frames "$FRAMES"
    )
    stage_args "$OUT/stage$stage" "${RUN_NAME:-onevision}-stage$stage" "${!batch_var}" "$per_device" "${!lr_var}" 0. \
        4096 500 8
    args+=("${STAGE_ARGS[@]}")
    case "$stage" in
        1) args+=(--version plain --mm_tunable_parts mm_mlp_adapter --data_path "$STAGE1_DATA") ;;
        2) args+=(--version qwen_1_5 --image_aspect_ratio pad --mm_tunable_parts mm_mlp_adapter
                  --data_path "$STAGE2_DATA" --pretrain_mm_mlp_adapter "$OUT/stage1/mm_projector.bin") ;;
        3) args+=(--version qwen_1_5 --image_aspect_ratio pad --mm_tunable_parts mm_mlp_adapter,mm_language_model
                  --data_path "$STAGE3_DATA" --pretrain_mm_mlp_adapter "$OUT/stage2/mm_projector.bin") ;;
        *) echo "run_stage: stage must be 1, 2 or 3, got '$stage'" >&2; return 1 ;;
    esac
    # shellcheck disable=SC2086  # PRECISION and EXTRA are flag lists
    launch "${args[@]}" ${PRECISION-} ${EXTRA-} "$@"
}
