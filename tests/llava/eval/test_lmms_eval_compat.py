"""What lmms-eval's stock ``llava_vid`` and ``llava_onevision`` wrappers import from ``llava`` and call
(loading, prompting, generating on a video), exercised on a tiny HICom checkpoint without lmms-eval;
and, when the ``eval`` extra is installed, the real ``llava_vid`` wrapper generating from it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava.eval.benchmarks import BENCHMARKS
from llava.eval.questions import VideoQuestion
from tests.helpers.videos import write_test_video

QUESTION = VideoQuestion("1", "What does the ball do?", ("x.mp4",), ("It rolls.", "It flies.", "It melts.", "It sings."))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("lmms") / "clip.mp4", num_frames=24)


def test_the_names_the_wrappers_import():
    from llava.constants import (
        DEFAULT_IM_END_TOKEN,
        DEFAULT_IM_START_TOKEN,
        DEFAULT_IMAGE_TOKEN,
        IGNORE_INDEX,
        IMAGE_TOKEN_INDEX,
    )
    from llava.conversation import SeparatorStyle, conv_templates
    from llava.mm_utils import (
        KeywordsStoppingCriteria,
        get_model_name_from_path,
        process_images,
        tokenizer_image_token,
    )
    from llava.model.builder import load_pretrained_model
    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.language_model.llava_qwen import LlavaQwenConfig
    from transformers import AutoConfig

    assert (IMAGE_TOKEN_INDEX, IGNORE_INDEX, DEFAULT_IMAGE_TOKEN) == (-200, -100, "<image>")
    assert (DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN) == ("<im_start>", "<im_end>")
    assert all(callable(f) for f in (KeywordsStoppingCriteria, get_model_name_from_path, process_images,
                                     tokenizer_image_token, load_pretrained_model))
    # lmms-eval picks the stop string by comparing a template's style with SeparatorStyle.TWO
    assert conv_templates["vicuna_v1"].sep_style is SeparatorStyle.TWO
    assert conv_templates["qwen_1_5"].sep_style is not SeparatorStyle.TWO
    for name in ("qwen_1_5", "qwen_2_5", "vicuna_v1"):
        conv = conv_templates[name].copy()
        conv.append_message(conv.roles[0], "q")
        conv.append_message(conv.roles[1], None)
        conv.messages[-1][1] = "a"  # the onevision loglikelihood path assigns into the last message
        assert "a" in conv.get_prompt() and conv.sep is not None and conv.sep_style is not None
    assert (LlavaConfig.model_type, LlavaQwenConfig.model_type) == ("llava_llama", "llava_qwen")
    for _ in range(2):  # llava_vid registers both at import; doing it again must be harmless
        AutoConfig.register("llava_llama", LlavaConfig)
        AutoConfig.register("llava_qwen", LlavaQwenConfig)


def _prompt_ids(tokenizer, context):
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import SeparatorStyle, conv_templates
    from llava.mm_utils import KeywordsStoppingCriteria, tokenizer_image_token

    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + context)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    stop = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2
    return ids, KeywordsStoppingCriteria([stop], tokenizer, ids)


def _frames(path, count):
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0))
    return reader.get_batch(np.linspace(0, len(reader) - 1, count, dtype=int).tolist()).asnumpy()


def test_llava_vid_calls(tiny_hicom, video):
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    pretrained = str(tiny_hicom)
    overwrite = {"mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "average", "mm_pooling_position": "before",
                 "mm_newline_position": "grid", "delay_load": False}
    tokenizer, model, processor, max_length = load_pretrained_model(
        pretrained, None, get_model_name_from_path(pretrained), device_map="auto", torch_dtype="bfloat16",
        overwrite_config=overwrite, attn_implementation="sdpa")
    assert max_length > 0 and model.config.mm_spatial_pool_mode == "average"
    model.eval()
    model.tie_weights()
    clip = processor.preprocess(_frames(video, 4), return_tensors="pt")["pixel_values"].bfloat16()
    assert clip.shape == (4, 3, 56, 56)

    context = BENCHMARKS["videomme"].prompt(QUESTION, "lmms")
    ids, stopping = _prompt_ids(tokenizer, context)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    mask = ids.ne(pad).long()
    with torch.inference_mode():
        out = model.generate(inputs=ids, images=[clip], attention_mask=mask, modalities="video", use_cache=True,
                             stopping_criteria=[stopping], do_sample=False, temperature=0, top_p=None, num_beams=1,
                             max_new_tokens=6)
    assert out.shape[0] == 1 and 1 <= out.shape[1] <= 6  # only the new tokens
    with torch.inference_mode():  # greedy: the first new token is the argmax after the prompt
        logits = model(input_ids=ids, images=[clip], attention_mask=mask, modalities=["video"]).logits
    assert out[0, 0].item() == logits[0, -1].argmax().item()
    # with the stock wrappers HICom reads its instruction from the prompt: the bare question
    assert model.recover_instructions(ids, mask) == [QUESTION.question]


def test_lmms_prompts_give_hicom_the_bare_question(tiny_hicom):
    from llava.model.builder import load_pretrained_model

    tokenizer, model, _, _ = load_pretrained_model(str(tiny_hicom), None, "llava_qwen", device_map="cpu",
                                                   torch_dtype="float32")
    for name in ("videomme", "mvbench", "egoschema", "mlvu"):
        ids, _ = _prompt_ids(tokenizer, BENCHMARKS[name].prompt(QUESTION, "lmms"))
        assert model.recover_instructions(ids, None) == [QUESTION.question], name


def test_llava_onevision_calls(tiny_hicom, video):
    import llava  # noqa: F401  (registers the model types with AutoConfig)
    from llava.model.builder import load_pretrained_model
    from transformers import AutoConfig

    pretrained = str(tiny_hicom)
    assert AutoConfig.from_pretrained(pretrained).model_type == "llava_qwen"
    tokenizer, model, processor, _ = load_pretrained_model(
        pretrained, None, "llava_qwen", device_map="auto", multimodal=True, attn_implementation="None",
        overwrite_config={"mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "bilinear"})
    model.eval()
    clip = processor.preprocess(_frames(video, 4), return_tensors="pt")["pixel_values"].half()
    ids, stopping = _prompt_ids(tokenizer, BENCHMARKS["mvbench"].prompt(QUESTION, "lmms"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.config.mm_spatial_pool_stride, model.config.mm_spatial_pool_mode = 2, "bilinear"
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=ids.ne(pad), pad_token_id=pad, images=[clip], use_cache=True,
                             modalities=["video"], stopping_criteria=[stopping], max_new_tokens=6, do_sample=False)
    assert 1 <= out.shape[1] <= 6


def test_stock_llava_vid_wrapper_generates(tiny_hicom, video):
    pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (the optional extra: pip install -e '.[eval]')")
    from lmms_eval.models.simple.llava_vid import LlavaVid

    wrapper = LlavaVid(pretrained=str(tiny_hicom), conv_template="qwen_1_5", device_map="auto", device="cpu",
                       torch_dtype="bfloat16", max_frames_num=4, force_sample=True)
    wrapper.task_dict = {"fixture_task": {"test": {0: {"question": QUESTION.question}}}}
    seen = []
    generate = wrapper.model.generate

    produced = []

    def spy(*args, **kwargs):
        seen.append((kwargs["images"][0].shape, kwargs["modalities"]))
        out = generate(*args, **kwargs)
        seen.append(wrapper.model.recover_instructions(kwargs["inputs"], kwargs["attention_mask"]))
        produced.append(out)
        return out

    wrapper.model.generate = spy
    context = BENCHMARKS["videomme"].prompt(QUESTION, "lmms")
    request = SimpleNamespace(args=(context, {"max_new_tokens": 6, "temperature": 0, "do_sample": False},
                                    lambda doc: [str(video)], 0, "fixture_task", "test"))
    [reply] = wrapper.generate_until([request])
    # the reply is what our generate produced (the wrapper's text for a failed video would differ)
    assert reply == wrapper.tokenizer.batch_decode(produced[0], skip_special_tokens=True)[0].strip()
    assert seen == [((4, 3, 56, 56), "video"), [QUESTION.question]]
