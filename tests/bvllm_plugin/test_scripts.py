"""The B-VLLM stage scripts at both scales give command lines the trainer parses, with each stage's parts
(``LAUNCHER=print``: nothing runs)."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tests.helpers.training import REPO

SCRIPTS = REPO / "scripts" / "train" / "bvllm"
PARTS = {"stage1_pretrain": "bvllm_selector,bvllm_linears", "stage2_sampler": "mm_mlp_adapter",
         "stage3_sft": "mm_mlp_adapter,mm_language_model"}


def printed_argv(scale: str, stage: str) -> list[str]:
    out = subprocess.run(["bash", str(SCRIPTS / scale / f"{stage}.sh")], cwd=REPO, capture_output=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "LAUNCHER": "print"}).stdout.decode()
    argv = shlex.split(out)
    assert argv[1] == "llava/train/train_mem.py"
    return argv[2:]


@pytest.mark.parametrize("scale", ["tiny", "qwen2_7B"])
@pytest.mark.parametrize("stage", list(PARTS))
def test_stage_command_lines_parse(scale, stage):
    from llava.train.arguments import parse_args

    argv = printed_argv(scale, stage)
    precision = [i for i, flag in enumerate(argv) if flag in ("--bf16", "--tf32")]
    assert [argv[i:i + 2] for i in precision] == ([["--bf16", "True"], ["--tf32", "True"]] if scale == "qwen2_7B" else [])
    argv = [flag for i, flag in enumerate(argv) if not any(i in (j, j + 1) for j in precision)]  # no bf16 on a CPU
    model_args, data_args, training_args = parse_args(argv)
    assert model_args.mm_projector_type == "bvllm" and model_args.mm_tunable_parts == PARTS[stage]
    assert training_args.deepspeed == "scripts/zero3.json"
    if scale == "qwen2_7B":
        assert model_args.bvllm_preset == "paper" and json.loads(model_args.bvllm_overrides) == {"qformer_vision_width": 1408}
        assert data_args.num_frames == (16 if stage == "stage1_pretrain" else 32)
        assert training_args.gradient_checkpointing
        batch = 128 if stage == "stage1_pretrain" else 64
        world = 8
        assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world == batch
        assert (model_args.bvllm_qformer_init is not None) == (stage == "stage1_pretrain")
    else:
        assert model_args.bvllm_preset == "tiny" and model_args.bvllm_qformer_tokenizer == "tiny"
    if stage != "stage1_pretrain":
        assert model_args.pretrain_mm_mlp_adapter.endswith(("stage1/mm_projector.bin", "stage2/mm_projector.bin"))
