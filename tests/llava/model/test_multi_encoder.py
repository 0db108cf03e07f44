"""A tower with two encoders, each with its own frame count, grid and width, built from one decoded clip,
reaches a projector through ``VisualBatch.encoders`` — with no edit to the core (the vision-tower hook)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from llava.mm_utils import pixel_size, process_video_frames
from llava.model.builder import assemble_llava_qwen, load_pretrained_model
from llava.model.multimodal_encoder.builder import VISION_TOWERS, register_vision_tower
from llava.model.multimodal_encoder.siglip_encoder import SigLipVisionTower
from llava.model.multimodal_projector.base import EncoderFeatures, StructuredProjector, VisualBatch
from llava.model.multimodal_projector.builder import PROJECTORS, register_projector

COARSE_WIDTH, COARSE_PATCH = 24, 14  # the second encoder: its own width and grid (56 px -> 4x4)


class TwoClipProcessor:
    """SigLIP's pixels for every frame, and every second frame for the coarse encoder."""

    def __init__(self, siglip_processor):
        self.siglip = siglip_processor

    def process_clip(self, frames_thwc, image_aspect_ratio):
        full = process_video_frames(frames_thwc, self.siglip, image_aspect_ratio)
        return {"siglip": full, "coarse": full[::2]}

    def save_pretrained(self, folder):
        self.siglip.save_pretrained(folder)


class TwoEncoderTower(SigLipVisionTower):
    """SigLIP plus a frozen strided-conv encoder that sees half the frames."""

    def __init__(self, vision_tower, vision_tower_cfg=None, delay_load=False, keep_head=False):
        super().__init__(vision_tower, vision_tower_cfg, delay_load, keep_head)
        torch.manual_seed(11)
        self.coarse = nn.Conv2d(3, COARSE_WIDTH, COARSE_PATCH, stride=COARSE_PATCH).requires_grad_(False)
        self.image_processor = TwoClipProcessor(self.image_processor)

    def encode_batch(self, items, modalities):
        items = [i if isinstance(i, dict) else {"siglip": i, "coarse": i} for i in items]  # images, dummies
        primary = super().encode_batch([i["siglip"] for i in items], modalities)
        coarse_in = torch.cat([i["coarse"] for i in items]).to(self.dtype)
        coarse = self.coarse(coarse_in).permute(0, 2, 3, 1)  # (sum T/2, 4, 4, 24)
        primary.encoders = {
            "siglip": EncoderFeatures(primary.features, primary.frames_per_item),
            "coarse": EncoderFeatures(coarse, [i["coarse"].shape[0] for i in items]),
        }
        return primary


class PerEncoderMeans(StructuredProjector):
    """One token per frame of each encoder: mean over the grid, then that encoder's linear map."""

    def __init__(self, config, **kwargs):
        super().__init__()
        self.maps = nn.ModuleDict({"siglip": nn.Linear(config.mm_hidden_size, config.hidden_size),
                                   "coarse": nn.Linear(COARSE_WIDTH, config.hidden_size)})

    def num_output_tokens(self, t, h, w, modality="video"):
        return t + (t + 1) // 2 if modality == "video" else 2 * t

    def forward(self, batch: VisualBatch):
        per_encoder = {name: self.maps[name](enc.features.mean(dim=(1, 2))).split(enc.frames_per_item)
                       for name, enc in batch.encoders.items()}
        return [torch.cat([per_encoder["siglip"][i], per_encoder["coarse"][i]]) for i in range(batch.num_items)]


@pytest.fixture(scope="module")
def two_encoder_model(tiny_dir, tmp_path_factory):
    register_vision_tower("test_two_encoders")(TwoEncoderTower)
    register_projector("test_per_encoder_means")(PerEncoderMeans)
    try:
        out = tmp_path_factory.mktemp("two_encoders")
        assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out,
                            mm_projector_type="test_per_encoder_means", mm_vision_tower_type="test_two_encoders")
        yield load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    finally:
        VISION_TOWERS.unregister("test_two_encoders")
        PROJECTORS.unregister("test_per_encoder_means")


def test_each_encoder_keeps_its_own_frames_grid_and_width(two_encoder_model):
    tokenizer, model, processor, _ = two_encoder_model
    assert isinstance(model.get_vision_tower(), TwoEncoderTower)  # chosen by mm_vision_tower_type
    frames = np.random.default_rng(0).integers(0, 255, size=(5, 40, 40, 3), dtype=np.uint8)
    pixels = process_video_frames(frames, processor, "pad")
    assert pixels["siglip"].shape == (5, 3, 56, 56) and pixels["coarse"].shape == (3, 3, 56, 56)
    assert pixel_size(pixels) == (56, 56)
    batch = model.get_vision_tower().encode_batch([pixels, pixels["siglip"][:1]], ["video", "image"])
    assert batch.encoders["siglip"].features.shape == (6, 7, 7, 32)
    assert batch.encoders["coarse"].features.shape == (4, 4, 4, COARSE_WIDTH)
    assert batch.encoders["coarse"].frames_per_item == [3, 1]
    tokens = model.encode_visual_items([pixels, pixels["siglip"][:1]], ["video", "image"])
    assert [t.shape[0] for t in tokens] == [model.num_visual_tokens(5, "video"), model.num_visual_tokens(1, "image")] == [8, 2]


def test_two_encoder_items_train_through_the_model(two_encoder_model):
    from llava.constants import IMAGE_TOKEN_INDEX

    tokenizer, model, processor, _ = two_encoder_model
    frames = np.random.default_rng(1).integers(0, 255, size=(4, 56, 56, 3), dtype=np.uint8)
    pixels = process_video_frames(frames, processor, "pad")
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 6, 7, 8], [5, 6, 7, 8, 9]])
    dummy = torch.zeros(1, 3, 56, 56)
    model.train()
    out = model(input_ids=ids, labels=ids.clamp(min=0), images=[pixels, dummy], modalities=["video", "text"])
    out.loss.backward()
    grads = {name: p.grad for name, p in model.get_model().mm_projector.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["maps.coarse.weight"].abs().sum() > 0  # the second encoder's tokens reached the loss
    model.eval()
    with torch.no_grad():  # not training: logits at every spliced position
        spliced = model(input_ids=ids, images=[pixels, dummy], modalities=["video", "text"]).logits
    assert spliced.shape[1] == 4 + model.num_visual_tokens(4, "video")  # 4 text + 4 + 2 visual
