#!/usr/bin/env bash
# Sourced by the MERV stage scripts: `run_merv_stage full_align|finetune [extra flags]` trains one stage.
#
# MERV's recipe (merv/conf/models.py, TRAINING.md) on our trainer; the encoders stay frozen throughout:
#   merv-base (RECIPE=base): one stage, `finetune`, on instruction data: projectors + mixer + LLM.
#   merv-full (RECIPE=full): first `full_align` on caption data with projectors + mixer + LLM unfrozen,
#                            then `finetune` from its output.
#
# Settings (environment; tiny/ and qwen2.5_7B/settings.sh set them for their scale):
#   LLM TOWER             LLM folder; MERV tower folder (config.json with model_type merv_tower)
#   FOLDER                media root; ALIGN_DATA FINETUNE_DATA annotation files
#   OUT                   writes $OUT/full_align and $OUT/finetune
#   GRID FUSION QUERY_DIM --merv_grid (t,h,w) --merv_fusion --merv_query_dim
#   FRAMES                --num_frames (a tower with a fixed num_frames decodes its own count)
#   {ALIGN,FINETUNE}_{LR,WD,BATCH,PER_DEVICE}   optimisation per stage
#   PRECISION EXTRA DS_CONFIG as for HICom (scripts/train/hicom_stages.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch.sh"

run_merv_stage() {
    local stage=$1
    shift
    local prefix
    case "$stage" in
        full_align) prefix=ALIGN ;;
        finetune) prefix=FINETUNE ;;
        *) echo "run_merv_stage: stage must be full_align or finetune, got '$stage'" >&2; return 1 ;;
    esac
    local lr_var="${prefix}_LR" wd_var="${prefix}_WD" batch_var="${prefix}_BATCH" per_device_var="${prefix}_PER_DEVICE"
    local data_var="${prefix}_DATA" per_device=${!per_device_var}
    local start=$LLM
    [[ "$stage" == finetune && "${RECIPE:-base}" == full ]] && start=$OUT/full_align
    local args=(
        --model_name_or_path "$start" --vision_tower "$TOWER" --mm_vision_tower_type merv
        --mm_projector_type merv --merv_grid "$GRID" --merv_fusion "$FUSION" --merv_query_dim "$QUERY_DIM"
        --mm_tunable_parts mm_mlp_adapter,mm_language_model
        --mm_use_im_start_end False --mm_use_im_patch_token False --version qwen_1_5
        --data_path "${!data_var}" --image_folder "$FOLDER" --video_folder "$FOLDER" --num_frames "$FRAMES"
    )
    stage_args "$OUT/$stage" "${RUN_NAME:-merv}-$stage" "${!batch_var}" "$per_device" "${!lr_var}" "${!wd_var}" \
        2048 500 8
    args+=("${STAGE_ARGS[@]}")
    # shellcheck disable=SC2086  # PRECISION and EXTRA are flag lists
    launch "${args[@]}" ${PRECISION-} ${EXTRA-} "$@"
}
