"""SigLipImageProcessor: shapes, exact pixel values, folder format, and agreement with transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.multimodal_encoder.siglip_processor import ImageSize, SigLipImageProcessor, parse_size

# preprocessor_config.json of google/siglip-so400m-patch14-384, as published.
SO400M_CONFIG = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}


def test_defaults_and_size_readable_by_index_and_by_key():
    processor = SigLipImageProcessor()
    assert processor.size == (384, 384)
    assert processor.size[0] == processor.size["height"] == 384
    assert processor.size["width"] == processor.size.width == 384
    assert processor.crop_size == {"height": 384, "width": 384}
    assert processor.image_mean == processor.image_std == [0.5, 0.5, 0.5]
    assert processor.resample == Image.Resampling.BICUBIC
    assert processor.do_rescale and processor.rescale_factor == 1 / 255
    with pytest.raises(KeyError, match="shortest_edge"):
        processor.size["shortest_edge"]


def test_parse_size_forms():
    assert parse_size(56) == parse_size((56, 56)) == parse_size({"height": 56, "width": 56}) == ImageSize(56, 56)
    assert parse_size([40, 60]) == ImageSize(height=40, width=60)
    with pytest.raises(ValueError, match="height"):
        parse_size({"shortest_edge": 384})
    with pytest.raises(ValueError, match="positive"):
        parse_size((0, 5))


def test_video_gives_frames_first_chw_in_minus_one_to_one():
    video = np.random.default_rng(0).integers(0, 256, (5, 30, 44, 3), dtype=np.uint8)
    video[0] = 0
    video[1] = 255
    pixel_values = SigLipImageProcessor(size=56).preprocess(video, return_tensors="pt")["pixel_values"]
    assert isinstance(pixel_values, torch.Tensor)
    assert pixel_values.shape == (5, 3, 56, 56)
    assert pixel_values.dtype == torch.float32
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1
    assert torch.all(pixel_values[0] == -1) and torch.all(pixel_values[1] == 1)


def test_exact_values_and_layout_without_resize():
    # 2x2 image, rows (top, bottom), columns (left, right); channel values chosen to be distinct.
    image_hwc = np.array(
        [[[0, 51, 102], [255, 204, 153]], [[10, 20, 30], [40, 50, 60]]],
        dtype=np.uint8,
    )
    processor = SigLipImageProcessor(size=2, image_mean=(0.5, 0.25, 0.0), image_std=(0.5, 0.5, 1.0))
    pixel_values = processor(image_hwc, return_tensors="np")["pixel_values"]
    assert isinstance(pixel_values, np.ndarray) and pixel_values.shape == (1, 3, 2, 2)
    mean = np.array([0.5, 0.25, 0.0])
    std = np.array([0.5, 0.5, 1.0])
    for row in range(2):
        for col in range(2):
            for channel in range(3):
                expected = (image_hwc[row, col, channel] / 255 - mean[channel]) / std[channel]
                assert pixel_values[0, channel, row, col] == pytest.approx(expected, abs=1e-6)


def test_uniform_image_stays_uniform_after_bicubic_resize():
    image = Image.new("RGB", (13, 7), color=(255, 0, 102))
    pixel_values = SigLipImageProcessor(size=(20, 30))(image)["pixel_values"]
    assert pixel_values.shape == (1, 3, 20, 30)
    expected = torch.tensor([1.0, -1.0, 102 / 255 * 2 - 1]).view(3, 1, 1).expand(3, 20, 30)
    torch.testing.assert_close(pixel_values[0], expected, atol=1e-6, rtol=0)


def test_all_input_forms_agree():
    frames = np.random.default_rng(1).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    processor = SigLipImageProcessor(size=56)
    from_video = processor(frames)["pixel_values"]
    from_arrays = processor(list(frames))["pixel_values"]
    from_pils = processor([Image.fromarray(frame) for frame in frames])["pixel_values"]
    one_pil = processor(Image.fromarray(frames[2]))["pixel_values"]
    assert torch.equal(from_video, from_arrays) and torch.equal(from_video, from_pils)
    assert torch.equal(one_pil, from_video[2:3])
    # Grey and RGBA images are converted to RGB first.
    grey = processor(Image.fromarray(frames[0]).convert("L"))["pixel_values"]
    assert grey.shape == (1, 3, 56, 56) and torch.equal(grey[0, 0], grey[0, 2])
    rgba = processor(Image.fromarray(frames[0]).convert("RGBA"))["pixel_values"]
    assert torch.equal(rgba, from_video[0:1])


def test_frames_already_at_the_target_size_match_the_pil_path():
    # uint8 RGB arrays of the target size skip PIL; the pixels must be those PIL would give.
    frames = np.random.default_rng(2).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    processor = SigLipImageProcessor(size=56)
    fast = processor(frames)["pixel_values"]
    via_pil = processor([Image.fromarray(frame) for frame in frames])["pixel_values"]
    assert torch.equal(fast, via_pil)
    # A non-contiguous view (a strided slice) of the right size goes the same way.
    wide = np.random.default_rng(3).integers(0, 256, (2, 56, 112, 3), dtype=np.uint8)
    strided = wide[:, :, ::2]
    assert torch.equal(processor(strided)["pixel_values"],
                       processor([Image.fromarray(np.ascontiguousarray(f)) for f in strided])["pixel_values"])


def test_bad_inputs_raise_specific_errors():
    processor = SigLipImageProcessor(size=8)
    with pytest.raises(ValueError, match="uint8"):
        processor(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        processor(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="no images"):
        processor([])
    with pytest.raises(TypeError, match="str"):
        processor("frame.png")
    with pytest.raises(ValueError, match="do_resize=False"):
        SigLipImageProcessor(size=8, do_resize=False)(np.zeros((4, 4, 3), dtype=np.uint8))


def test_reads_a_real_so400m_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(SO400M_CONFIG))
    processor = SigLipImageProcessor.from_pretrained(tmp_path)
    assert processor.size == (384, 384) and processor.crop_size == {"height": 384, "width": 384}
    assert processor.resample == Image.Resampling.BICUBIC
    assert processor.rescale_factor == pytest.approx(1 / 255)


def test_save_then_load_round_trip(tmp_path):
    processor = SigLipImageProcessor(size=(48, 64), image_mean=(0.1, 0.2, 0.3), image_std=(0.4, 0.5, 0.6))
    written = processor.save_pretrained(tmp_path / "new")
    assert written == tmp_path / "new" / "preprocessor_config.json"
    assert json.loads(written.read_text())["size"] == {"height": 48, "width": 64}
    reloaded = SigLipImageProcessor.from_pretrained(tmp_path / "new")
    assert reloaded.to_dict() == processor.to_dict()


def test_missing_or_broken_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-siglip"
    with pytest.raises(FileNotFoundError, match="no-such-siglip"):
        SigLipImageProcessor.from_pretrained(missing)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        SigLipImageProcessor.from_pretrained(tmp_path)


def test_transformers_reads_our_config_and_gives_the_same_pixels(tmp_path):
    try:
        from transformers import SiglipImageProcessor
    except ImportError as err:
        pytest.skip(f"transformers' SiglipImageProcessor is not importable here: {err}")
    ours = SigLipImageProcessor(size=56)
    ours.save_pretrained(tmp_path)
    try:
        # Without torchvision this falls back to transformers' PIL backend.
        theirs = SiglipImageProcessor.from_pretrained(tmp_path)
    except ImportError as err:
        pytest.skip(f"transformers' SiglipImageProcessor needs a missing backend: {err}")
    assert (theirs.size["height"], theirs.size["width"]) == (56, 56)

    frames = np.random.default_rng(2).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    expected = theirs([Image.fromarray(frame) for frame in frames], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours(frames)["pixel_values"], expected, atol=1e-6, rtol=0)
