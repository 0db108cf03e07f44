#!/usr/bin/env bash
# Sourced by the per-stage scripts: `run_stage 1|2 [extra flags]` trains one DisCo stage.
#
# DisCo's two stages (disco_plugin/README.md): 1 = caption alignment with the VCD and TFC losses
# (records carry "instances"); 2 = instruction tuning with the LM loss only.
#
# Settings (environment; the per-scale settings.sh set them):
#   LLM VISION            model folders (HF format, local); VCD reads SigLIP's text tower from VISION
#   FOLDER                media root (image_folder = video_folder); STAGE{1,2}_DATA annotation files
#   OUT                   stage N writes $OUT/stageN; stage 2 starts from $OUT/stage1/mm_projector.bin
#   PRESET OVERRIDES      DisCo preset (prototype | tiny) and a JSON of DiscoConfig fields ('' for none)
#   FRAMES                frames per video
#   VCD_WEIGHT TFC_WEIGHT stage-1 loss weights (the prototype's 1 and 1)
#   STAGE{N}_LR STAGE{N}_BATCH STAGE{N}_PER_DEVICE STAGE{N}_TUNABLE   learning rates, batches, parts
#   PRECISION             e.g. "--bf16 True --tf32 True" (empty for fp32 on a CPU)
#   EXTRA                 flags added to every stage (e.g. "--max_steps 20")
#   DS_CONFIG             DeepSpeed config (default scripts/zero3.json; empty: no DeepSpeed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch.sh"

run_stage() {
    local stage=$1
    shift
    local batch_var="STAGE${stage}_BATCH" per_device_var="STAGE${stage}_PER_DEVICE" lr_var="STAGE${stage}_LR"
    local tunable_var="STAGE${stage}_TUNABLE"
    local per_device=${!per_device_var}
    local args=(
        --model_name_or_path "$LLM" --vision_tower "$VISION"
        --mm_projector_type disco --disco_preset "$PRESET" --mm_vision_select_layer -2
        --mm_use_im_start_end False --mm_use_im_patch_token False
        --image_folder "$FOLDER" --video_folder "$FOLDER" --num_frames "$FRAMES"
        --mm_tunable_parts "${!tunable_var}"
    )
    stage_args "$OUT/stage$stage" "${RUN_NAME:-disco}-stage$stage" "${!batch_var}" "$per_device" "${!lr_var}" 0. \
        4096 500 8
    args+=("${STAGE_ARGS[@]}")
    [[ -z "${OVERRIDES:-}" ]] || args+=(--disco_overrides "$OVERRIDES")
    case "$stage" in
        1) args+=(--version plain --data_path "$STAGE1_DATA"
                  --disco_vcd_weight "${VCD_WEIGHT:-1.0}" --disco_tfc_weight "${TFC_WEIGHT:-1.0}") ;;
        2) args+=(--version qwen_1_5 --image_aspect_ratio pad --data_path "$STAGE2_DATA"
                  --disco_vcd_weight 0 --disco_tfc_weight 0
                  --pretrain_mm_mlp_adapter "$OUT/stage1/mm_projector.bin") ;;
        *) echo "run_stage: DisCo has stages 1 and 2, got '$stage'" >&2; return 1 ;;
    esac
    # shellcheck disable=SC2086  # PRECISION and EXTRA are flag lists
    launch "${args[@]}" ${PRECISION-} ${EXTRA-} "$@"
}
