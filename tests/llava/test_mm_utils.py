"""Image preprocessing geometry, prompt tokenisation and stopping criteria of ``llava.mm_utils``."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    divide_to_patches,
    expand2square,
    get_anyres_image_grid_shape,
    get_model_name_from_path,
    load_image_from_base64,
    parse_grid_pinpoints,
    process_anyres_image,
    process_images,
    resize_and_pad_image,
    select_best_resolution,
    tokenizer_image_token,
)
from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor

VOCAB = ["<unk>", "<s>", "</s>", "USER:", "ASSISTANT:", "What", "is", "this", "?", "A", "B", "<|im_end|>"]
ID = {word: index for index, word in enumerate(VOCAB)}


def make_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer; with ``add_bos`` it prepends ``<s>`` to every call, like LLaMA."""
    backend = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {"unk_token": "<unk>", "eos_token": "</s>"}
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", ID["<s>"])])
        kwargs["bos_token"] = "<s>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    return tokenizer


@pytest.fixture(scope="module")
def bos_tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer(add_bos=True)


@pytest.fixture(scope="module")
def plain_tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer(add_bos=False)


class FakeProcessor:
    """Duck-typed image processor: RGB resize to ``side`` and scale to [0, 1] (no normalisation),
    so tests can read pixel colours back from ``pixel_values``."""

    def __init__(self, side: int = 32, image_mean=(0.2, 0.4, 0.6)):
        self.size = (side, side)
        self.crop_size = {"height": side, "width": side}
        self.image_mean = image_mean
        self.calls = 0

    def preprocess(self, images, return_tensors="pt"):
        assert return_tensors == "pt"
        self.calls += 1
        images = [images] if isinstance(images, Image.Image) else list(images)
        side = self.size[0]
        arrays = [np.asarray(image.convert("RGB").resize((side, side)), dtype=np.float32) / 255 for image in images]
        return {"pixel_values": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)}


def solid(width: int, height: int, color=(255, 0, 0)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


# --------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize(
    "prompt, with_bos, without_bos",
    [
        ("USER: <image>\nWhat is this ? ASSISTANT:", [1, 3, -200, 5, 6, 7, 8, 4], [3, -200, 5, 6, 7, 8, 4]),
        ("<image>\nWhat", [1, -200, 5], [-200, 5]),
        ("A <image> B <image> <image>", [1, 9, -200, 10, -200, -200], [9, -200, 10, -200, -200]),
        ("What is", [1, 5, 6], [5, 6]),
        ("<image>", [1, -200], [-200]),
    ],
)
def test_tokenizer_image_token_ids(bos_tokenizer, plain_tokenizer, prompt, with_bos, without_bos):
    assert tokenizer_image_token(prompt, bos_tokenizer) == with_bos
    assert tokenizer_image_token(prompt, plain_tokenizer) == without_bos


def test_tokenizer_image_token_tensor_and_custom_index(plain_tokenizer):
    ids = tokenizer_image_token("What <image> is", plain_tokenizer, image_token_index=-7, return_tensors="pt")
    assert ids.dtype == torch.long and ids.ndim == 1
    assert ids.tolist() == [5, -7, 6]
    assert IMAGE_TOKEN_INDEX == -200
    with pytest.raises(ValueError, match="return_tensors='np'"):
        tokenizer_image_token("What", plain_tokenizer, return_tensors="np")


# --------------------------------------------------------------------------- stopping criteria


def test_keywords_stopping_matches_token_ids_per_row(plain_tokenizer):
    prompt = torch.tensor([[ID["USER:"], ID["What"], ID["ASSISTANT:"]]] * 2)
    criteria = KeywordsStoppingCriteria(["A B"], plain_tokenizer, prompt)
    assert criteria.keyword_ids[0].tolist() == [ID["A"], ID["B"]]
    output = torch.cat([prompt, torch.tensor([[ID["A"], ID["B"]], [ID["B"], ID["A"]]])], dim=1)
    done = criteria(output, None)
    assert done.dtype == torch.bool and done.tolist() == [True, False]


def test_keywords_stopping_decodes_recent_text_but_not_the_prompt(plain_tokenizer):
    # The prompt ends with the keyword; it must not stop generation by itself.
    prompt = torch.tensor([[ID["What"], ID["B"]]])
    criteria = KeywordsStoppingCriteria("B", plain_tokenizer, prompt)
    assert criteria(torch.cat([prompt, torch.tensor([[ID["A"]]])], dim=1), None).tolist() == [False]
    # "B" inside the last generated tokens (not at the very end) is found in the decoded text.
    output = torch.cat([prompt, torch.tensor([[ID["B"], ID["?"]]])], dim=1)
    assert criteria(output, None).tolist() == [True]


def test_keywords_stopping_with_new_tokens_only_and_special_keyword(plain_tokenizer):
    # generate(inputs_embeds=...) hands the criteria only the new tokens.
    prompt = torch.zeros(1, 10, dtype=torch.long)
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], plain_tokenizer, prompt)
    new_tokens = torch.tensor([[ID["A"], ID["<|im_end|>"]], [ID["<|im_end|>"], ID["A"]]])
    assert criteria(new_tokens, None).tolist() == [True, False]


# --------------------------------------------------------------------------- geometry


def test_select_best_resolution_prefers_effective_pixels_then_less_padding():
    candidates = [(384, 768), (768, 384), (768, 768)]
    assert select_best_resolution((1000, 500), candidates) == (768, 384)
    assert select_best_resolution((300, 900), candidates) == (384, 768)
    assert select_best_resolution((100, 100), candidates) == (384, 768)  # all fit; least waste is first
    with pytest.raises(ValueError, match="empty"):
        select_best_resolution((10, 10), [])


def test_resize_and_pad_image_centres_on_black():
    padded = resize_and_pad_image(solid(100, 50), (64, 64))
    pixels = np.asarray(padded)
    assert padded.size == (64, 64) and padded.mode == "RGB"
    assert (pixels[:16] == 0).all() and (pixels[48:] == 0).all()
    assert (pixels[16:48] == [255, 0, 0]).all()


def test_divide_to_patches_row_major():
    image = Image.new("RGB", (64, 64))
    image.paste(solid(32, 32, (10, 0, 0)), (0, 0))
    image.paste(solid(32, 32, (20, 0, 0)), (32, 0))
    image.paste(solid(32, 32, (30, 0, 0)), (0, 32))
    image.paste(solid(32, 32, (40, 0, 0)), (32, 32))
    patches = divide_to_patches(image, 32)
    assert [patch.size for patch in patches] == [(32, 32)] * 4
    assert [np.asarray(patch)[0, 0, 0] for patch in patches] == [10, 20, 30, 40]


def test_expand2square_pads_short_axis_symmetrically():
    wide = np.asarray(expand2square(solid(40, 20), (1, 2, 3)))
    assert wide.shape == (40, 40, 3)
    assert (wide[:10] == [1, 2, 3]).all() and (wide[30:] == [1, 2, 3]).all() and (wide[10:30] == [255, 0, 0]).all()
    tall = np.asarray(expand2square(solid(20, 40), (1, 2, 3)))
    assert (tall[:, :10] == [1, 2, 3]).all() and (tall[:, 10:30] == [255, 0, 0]).all()
    square = solid(8, 8)
    assert expand2square(square, (0, 0, 0)) is square


def test_parse_grid_pinpoints_range_and_literal_syntax():
    grid = parse_grid_pinpoints("(1x1),...,(6x6)", 384)
    assert len(grid) == 36
    assert grid[:3] == [(384, 384), (384, 768), (384, 1152)]
    assert grid[-1] == (2304, 2304)
    assert parse_grid_pinpoints("(1x1),(2x3)", 10) == [(10, 10), (10, 20), (10, 30), (20, 10), (20, 20), (20, 30)]
    literal = [(384, 768), (768, 384)]
    assert parse_grid_pinpoints(str(literal), 999) == literal
    assert parse_grid_pinpoints([[384, 768], [768, 384]], 999) == literal
    for bad in ["(1x)", "[(1, 2, 3)]", "not a list", [], [(0, 5)]]:
        with pytest.raises(ValueError, match="image_grid_pinpoints"):
            parse_grid_pinpoints(bad, 384)


def test_anyres_grid_shape():
    assert get_anyres_image_grid_shape((100, 40), "(1x1),...,(3x3)", 32) == (3, 2)
    assert get_anyres_image_grid_shape((1000, 500), "[(384, 768), (768, 384), (768, 768)]", 384) == (2, 1)


# --------------------------------------------------------------------------- process_images


def test_process_images_square_is_one_batched_call():
    processor = FakeProcessor()
    for aspect in ("square", None):
        out = process_images([solid(50, 20), solid(20, 50)], processor, SimpleNamespace(image_aspect_ratio=aspect))
        assert out.shape == (2, 3, 32, 32)
    out = process_images([solid(50, 20)], processor, SimpleNamespace())  # attribute missing -> square
    assert out.shape == (1, 3, 32, 32)
    assert processor.calls == 3


def test_process_images_pad_uses_mean_colour():
    processor = FakeProcessor(side=40, image_mean=(0.2, 0.4, 0.6))
    out = process_images([solid(40, 20)], processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert out.shape == (1, 3, 40, 40)
    background = torch.tensor([51, 102, 153], dtype=torch.float32) / 255
    assert torch.allclose(out[0, :, 0, 0], background)
    assert torch.allclose(out[0, :, 20, 20], torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("aspect", ["anyres", "anyres_max_9"])
@pytest.mark.parametrize("pinpoints", ["(1x1),...,(3x3)", [[32, 32], [32, 64], [64, 32], [96, 64], [96, 96]]])
def test_process_images_anyres_shapes(aspect, pinpoints):
    processor = FakeProcessor(side=32)
    cfg = SimpleNamespace(image_aspect_ratio=aspect, image_grid_pinpoints=pinpoints)
    wide = solid(100, 40)  # best fit (96, 64): 3 x 2 tiles + overview
    out = process_images([wide, wide], processor, cfg)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7, 3, 32, 32)
    mixed = process_images([wide, solid(30, 30)], processor, cfg)  # (32, 32): 1 tile + overview
    assert isinstance(mixed, list) and [t.shape for t in mixed] == [(7, 3, 32, 32), (2, 3, 32, 32)]


@pytest.mark.parametrize("height, width", [(30, 30), (20, 30)])
def test_process_video_frames_pad_matches_padding_each_frame(height, width):
    # Square frames skip the per-frame padding; both shapes must equal pad-then-preprocess per frame.
    from llava.mm_utils import process_video_frames

    frames = np.random.default_rng(4).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    processor = SigLipImageProcessor(size=28)
    background = tuple(int(channel * 255) for channel in processor.image_mean)
    expected = torch.cat([processor(expand2square(Image.fromarray(f), background))["pixel_values"] for f in frames])
    assert torch.equal(process_video_frames(frames, processor, "pad"), expected)
    resized = processor(frames)["pixel_values"]
    assert torch.equal(process_video_frames(frames, processor, None), resized)


def test_process_anyres_image_overview_comes_first_and_tiles_are_padded():
    processor = FakeProcessor(side=32)
    image = solid(100, 40, (0, 255, 0))
    out = process_anyres_image(image, processor, "(1x1),...,(3x3)")
    assert out.shape == (7, 3, 32, 32)
    assert torch.equal(out[0], processor.preprocess(image.resize((32, 32)))["pixel_values"][0])
    # Canvas 96x64 holds the image resized to 96x39 at y=12: the top tiles start with black rows.
    assert out[1, :, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert out[1, :, 31, 0].tolist() == [0.0, 1.0, 0.0]


def test_process_images_errors():
    processor = FakeProcessor()
    with pytest.raises(ValueError, match="image_grid_pinpoints"):
        process_images([solid(8, 8)], processor, SimpleNamespace(image_aspect_ratio="anyres"))
    with pytest.raises(NotImplementedError, match="highres"):
        process_images([solid(8, 8)], processor, SimpleNamespace(image_aspect_ratio="highres"))
    with pytest.raises(ValueError, match="empty"):
        process_images([], processor, SimpleNamespace(image_aspect_ratio="pad"))


def test_process_images_with_transformers_siglip_processor():
    transformers = pytest.importorskip("transformers")
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    square = process_images([solid(50, 20), solid(10, 30)], processor, SimpleNamespace(image_aspect_ratio="square"))
    assert tuple(square.shape) == (2, 3, 32, 32)
    cfg = SimpleNamespace(image_aspect_ratio="anyres_max_9", image_grid_pinpoints="(1x1),...,(2x2)")
    anyres = process_images([solid(64, 30)], processor, cfg)  # size is a dict and crop_size is unset
    assert tuple(anyres.shape) == (1, 3, 3, 32, 32)


# --------------------------------------------------------------------------- misc


def test_load_image_from_base64_round_trip():
    buffer = io.BytesIO()
    solid(5, 3, (1, 2, 3)).save(buffer, format="PNG")
    image = load_image_from_base64(base64.b64encode(buffer.getvalue()).decode())
    assert image.size == (5, 3) and np.asarray(image)[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "path, name",
    [
        ("/data/models/llava-onevision-qwen2-7b-ov", "llava-onevision-qwen2-7b-ov"),
        ("/data/models/llava-onevision-qwen2-7b-ov/", "llava-onevision-qwen2-7b-ov"),
        ("lmms-lab/LLaVA-Video-7B-Qwen2", "LLaVA-Video-7B-Qwen2"),
        ("out/run1/checkpoint-500", "run1_checkpoint-500"),
        ("out/run1/checkpoint-500/", "run1_checkpoint-500"),
        ("checkpoint-7", "checkpoint-7"),
        ("tiny", "tiny"),
    ],
)
def test_get_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name


def test_one_image_loader_for_training_serving_and_frame_folders(tmp_path):
    """A 16-bit PNG is scaled to 8 bits (not clipped) and transparency lands on white, identically in
    training's loader, the CLI's and the evaluation's frame folders."""
    import numpy as np
    from PIL import Image

    from llava.eval.video_io import _load_frame_folder
    from llava.mm_utils import to_rgb
    from llava.serve.cli import read_image
    from llava.train.data import load_image

    deep = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:, 24:, 3] = 255  # left half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")

    converted = np.asarray(to_rgb(Image.open(tmp_path / "deep16.png")))
    assert converted.dtype == np.uint8 and converted[..., 0].max() == 255 and converted[..., 0].min() == 0
    assert np.abs(converted[..., 0].astype(int) - np.rint(deep / 257)).max() == 0
    assert 100 < converted.mean() < 155  # a ramp: about half grey, not almost all white
    for name, expected_left in (("deep16.png", None), ("alpha.png", (255, 255, 255))):
        path = tmp_path / name
        trained = np.asarray(load_image(str(path), 10**8))
        served = np.asarray(read_image(path))
        folder = tmp_path / f"frames_{name}"
        folder.mkdir()
        (folder / "0001.png").write_bytes(path.read_bytes())
        evaluated = _load_frame_folder(folder, 1, None).frames[0]
        assert np.array_equal(trained, served) and np.array_equal(trained, evaluated)
        if expected_left:
            assert tuple(trained[5, 5]) == expected_left and tuple(trained[5, 40]) == (0, 0, 255)
