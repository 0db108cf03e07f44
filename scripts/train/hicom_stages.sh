#!/usr/bin/env bash
# Sourced by the per-stage scripts: `run_stage 1|2|3 [extra flags]` trains one HICom stage.
#
# Settings (environment; the per-stage scripts set the paper's values for their scale):
#   LLM VISION            model folders (HF format, local)
#   FOLDER                media root (image_folder = video_folder); STAGE{1,2,3}_DATA annotation files
#   OUT                   stage N writes $OUT/stageN; stages 2-3 start from $OUT/stage{N-1}/mm_projector.bin
#   PRESET FRAMES         HICom preset (paper | release) and frames per video
#   STAGE{N}_LR STAGE2_INJECTOR_LR STAGE{N}_BATCH STAGE{N}_PER_DEVICE   learning rates and batches
#   STAGE3_TUNABLE        parts trained in stage 3 (add vision_tower_head,text_tower to re-train the
#                         encoders as the released checkpoint did, at --mm_vision_tower_lr)
#   PRECISION             e.g. "--bf16 True --tf32 True" (empty for fp32 on a CPU)
#   EXTRA                 flags added to every stage (e.g. "--max_steps 20")
#   DS_CONFIG             DeepSpeed config (default scripts/zero3.json; empty: no DeepSpeed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"

run_stage() {
    local stage=$1
    shift
    local batch_var="STAGE${stage}_BATCH" per_device_var="STAGE${stage}_PER_DEVICE" lr_var="STAGE${stage}_LR"
    local per_device=${!per_device_var}
    local args=(
        --model_name_or_path "$LLM" --vision_tower "$VISION"
        --mm_projector_type hicom --hicom_preset "$PRESET" --mm_vision_select_layer -2
        --mm_use_im_start_end False --mm_use_im_patch_token False
        --image_folder "$FOLDER" --video_folder "$FOLDER" --num_frames "$FRAMES"
    )
    stage_args "$OUT/stage$stage" "${RUN_NAME:-hicom}-stage$stage" "${!batch_var}" "$per_device" "${!lr_var}" 0. \
        4096 500 8
    args+=("${STAGE_ARGS[@]}")
    case "$stage" in
        1) args+=(--version plain --use_guide off --mm_tunable_parts mm_mlp_adapter --data_path "$STAGE1_DATA") ;;
        2) args+=(--version qwen_1_5 --image_aspect_ratio pad --mm_tunable_parts mm_mlp_adapter
                  --guide_injector_lr "$STAGE2_INJECTOR_LR" --data_path "$STAGE2_DATA"
                  --pretrain_mm_mlp_adapter "$OUT/stage1/mm_projector.bin") ;;
        3) args+=(--version qwen_1_5 --image_aspect_ratio pad --mm_tunable_parts "$STAGE3_TUNABLE"
                  --data_path "$STAGE3_DATA" --pretrain_mm_mlp_adapter "$OUT/stage2/mm_projector.bin")
           # the encoders' LR only when stage 3 trains an encoder part (else the flag sets nothing)
           [[ "$STAGE3_TUNABLE" != *tower* ]] || args+=(--mm_vision_tower_lr "${STAGE3_TOWER_LR:-2e-6}") ;;
        *) echo "run_stage: stage must be 1, 2 or 3, got '$stage'" >&2; return 1 ;;
    esac
    # shellcheck disable=SC2086  # PRECISION and EXTRA are flag lists
    launch "${args[@]}" ${PRECISION-} ${EXTRA-} "$@"
}
