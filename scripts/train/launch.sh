#!/usr/bin/env bash
# Sourced by the stage scripts: `launch ARGS...` runs llava/train/train_mem.py on every rank.
#
#   LAUNCHER=torchrun  (default) torchrun over NUM_GPUS x NNODES; set NNODES, RANK, ADDR, PORT per node
#   LAUNCHER=deepspeed DeepSpeed's launcher; HOSTFILE=path for several nodes (its hostfile format)
#   LAUNCHER=python    one process (debugging)
#   LAUNCHER=print     print the command line instead of running it: one line, shell-quoted, to read or
#                      paste (Python reads it back with shlex.split; llava.toy.zoo trains
#                      in-process with exactly these flags)
#
# GLOBAL_BATCH / (world size x PER_DEVICE_BATCH) gives --gradient_accumulation_steps.
set -euo pipefail

PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-torchrun}
NUM_GPUS=${NUM_GPUS:-8}
NNODES=${NNODES:-1}
RANK=${RANK:-0}
ADDR=${ADDR:-127.0.0.1}
PORT=${PORT:-29500}

grad_accum() {  # GLOBAL_BATCH PER_DEVICE_BATCH -> accumulation steps (must divide exactly)
    local world=$((NUM_GPUS * NNODES)) global=$1 per_device=$2
    if (( global % (world * per_device) != 0 )); then
        echo "global batch $global is not a multiple of $world ranks x $per_device per device" >&2
        return 1
    fi
    echo $((global / (world * per_device)))
}

launch() {
    case "$LAUNCHER" in
        torchrun)
            "$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" --nnodes "$NNODES" \
                --node_rank "$RANK" --master_addr "$ADDR" --master_port "$PORT" llava/train/train_mem.py "$@" ;;
        deepspeed)
            local hosts=()
            if [[ -n "${HOSTFILE:-}" ]]; then hosts=(--hostfile "$HOSTFILE"); else hosts=(--num_gpus "$NUM_GPUS"); fi
            "$PYTHON" -m deepspeed.launcher.runner "${hosts[@]}" --master_port "$PORT" llava/train/train_mem.py "$@" ;;
        python)
            "$PYTHON" llava/train/train_mem.py "$@" ;;
        print)
            printf '%q ' "$PYTHON" llava/train/train_mem.py "$@"
            echo ;;
        *)
            echo "LAUNCHER must be torchrun, deepspeed, python or print, got '$LAUNCHER'" >&2
            return 1 ;;
    esac
}

# stage_args OUTPUT_DIR RUN_NAME GLOBAL_BATCH PER_DEVICE_BATCH LR WEIGHT_DECAY MAX_LENGTH SAVE_STEPS WORKERS
# Sets the array STAGE_ARGS to the flags every method's stage shares: epochs, batch and accumulation, the
# cosine schedule, saving, logging, and the DeepSpeed config (DS_CONFIG, default scripts/zero3.json;
# DS_CONFIG= (empty) trains without DeepSpeed). EPOCHS WARMUP_RATIO SAVE_STEPS MAX_LENGTH WORKERS
# GRADIENT_CHECKPOINTING REPORT_TO override the method's defaults from the environment.
stage_args() {
    local out=$1 name=$2 global=$3 per_device=$4 lr=$5 weight_decay=$6 max_length=$7 save_steps=$8 workers=$9
    local accumulation
    accumulation=$(grad_accum "$global" "$per_device") || return 1
    STAGE_ARGS=(
        --output_dir "$out" --run_name "$name" --num_train_epochs "${EPOCHS:-1}"
        --per_device_train_batch_size "$per_device" --gradient_accumulation_steps "$accumulation"
        --learning_rate "$lr" --weight_decay "$weight_decay" --warmup_ratio "${WARMUP_RATIO:-0.03}"
        --lr_scheduler_type cosine --logging_steps 1
        --save_strategy steps --save_steps "${SAVE_STEPS:-$save_steps}" --save_total_limit 2
        --model_max_length "${MAX_LENGTH:-$max_length}" --gradient_checkpointing "${GRADIENT_CHECKPOINTING:-True}"
        --dataloader_num_workers "${WORKERS:-$workers}" --report_to "${REPORT_TO:-tensorboard}"
    )
    local ds_config=${DS_CONFIG-scripts/zero3.json}
    [[ -z "$ds_config" ]] || STAGE_ARGS+=(--deepspeed "$ds_config")
}

