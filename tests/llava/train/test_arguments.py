"""A real OneVision stage-1 command line parses under transformers 5, aliases included."""

import shlex

import pytest

from llava.train.arguments import parse_args

ONEVISION_STAGE1 = """
--deepspeed scripts/zero3.json --model_name_or_path playground/models/Qwen2.5-7B-Instruct --version plain
--data_path playground/data/blip_558k_plain.json --image_folder playground/data/images
--vision_tower playground/models/siglip-so400m-patch14-384 --mm_tunable_parts=mm_mlp_adapter
--mm_vision_select_layer -2 --mm_projector_type mlp2x_gelu --mm_use_im_start_end False
--mm_use_im_patch_token False --bf16 False --output_dir {out} --num_train_epochs 1
--per_device_train_batch_size 16 --per_device_eval_batch_size 4 --gradient_accumulation_steps 1
--evaluation_strategy no --save_strategy no --save_steps 50000 --learning_rate 1e-3 --weight_decay 0.
--warmup_ratio 0.03 --lr_scheduler_type cosine --logging_steps 1 --tf32 False --model_max_length 8192
--gradient_checkpointing True --dataloader_num_workers 16 --lazy_preprocess True --report_to none
--run_name stage1 --attn_implementation sdpa --group_by_length False
"""


def test_onevision_stage1_flags_parse(tmp_path):
    argv = shlex.split(ONEVISION_STAGE1.format(out=tmp_path))
    argv.remove("--deepspeed")
    argv.remove("scripts/zero3.json")  # DeepSpeed itself is exercised by the training tests
    model, data, train = parse_args(argv)
    assert model.mm_tunable_parts == "mm_mlp_adapter"
    assert model.mm_vision_select_layer == -2 and model.mm_projector_type == "mlp2x_gelu"
    assert not model.mm_use_im_patch_token
    assert data.data_path.endswith("blip_558k_plain.json") and data.lazy_preprocess
    assert train.eval_strategy == "no"
    assert train.warmup_steps == pytest.approx(0.03)
    assert train.remove_unused_columns is False and train.gradient_checkpointing is True
    assert train.model_max_length == 8192


def test_upstream_defaults(tmp_path):
    model, data, train = parse_args(["--output_dir", str(tmp_path)])
    assert model.mm_projector_type == "linear" and model.mm_vision_select_layer == -1
    assert model.mm_spatial_pool_mode == "bilinear" and model.mm_newline_position == "grid"
    assert data.image_aspect_ratio == "square" and data.frames_upbound == 0
    assert train.attn_implementation == "sdpa" and train.model_max_length == 4096


def test_hicom_flags(tmp_path):
    model, _, train = parse_args(["--output_dir", str(tmp_path), "--mm_projector_type", "local43_global32",
                                  "--use_guide", "direct", "--guide_injector_lr", "1e-3",
                                  "--mm_tunable_parts", "mm_mlp_adapter, guide_injector"])
    assert model.use_guide == "direct" and train.guide_injector_lr == pytest.approx(1e-3)
    assert model.mm_tunable_parts == "mm_mlp_adapter,guide_injector"


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(ValueError, match="mm_tunable_parts.*mm_everything"):
        parse_args(["--output_dir", str(tmp_path), "--mm_tunable_parts", "mm_everything"])
    with pytest.raises(ValueError, match="warmup_ratio"):
        parse_args(["--output_dir", str(tmp_path), "--warmup_ratio", "1.5"])


@pytest.mark.parametrize("flag, expected", [([], True), (["--gradient_checkpointing", "False"], False)])
def test_upstream_gradient_checkpointing_flag_raises_no_warning(flag, expected, recwarn):
    _, _, train = parse_args(["--output_dir", "out", *flag])
    assert train.gradient_checkpointing is expected
    assert getattr(train, "activation_checkpointing", expected) is expected
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)], [str(w.message) for w in recwarn]


def test_parsed_arguments_pickle_after_a_plugin_came_and_went(tmp_path):
    """The Trainer pickles its arguments (``training_args.bin``): the merged classes must stay the module's
    attributes when a plugin is registered for a while and removed again (another plugin set in between)."""
    import pickle
    from dataclasses import dataclass

    from llava.plugin import PLUGINS, Plugin, register_plugin

    @dataclass
    class ComeAndGoArgs:
        come_and_go_lr: float | None = None

    argv = ["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--report_to", "none"]
    before = parse_args(argv)[2]
    register_plugin(Plugin(name="come_and_go", training_args=ComeAndGoArgs))
    try:
        assert parse_args([*argv, "--come_and_go_lr", "0.1"])[2].come_and_go_lr == 0.1
    finally:
        PLUGINS.unregister("come_and_go")
    after = parse_args(argv)[2]
    assert type(after) is type(before)
    assert pickle.loads(pickle.dumps(after)).output_dir == str(tmp_path)
