"""The MERV tower: four real HF encoders read from their own folders, each fed its own pixels from one
clip; the layer each reads; batching; bad input named."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import CLIPVisionModel, Dinov2WithRegistersModel, SiglipVisionModel, VivitModel

from llava.constants import IMAGE_TOKEN_INDEX
from merv_plugin.processor import MERVProcessor, sample_indices
from merv_plugin.tower import MERVVisionTower

CLASSES = {"languagebind": CLIPVisionModel, "dinov2": Dinov2WithRegistersModel, "vivit": VivitModel,
           "siglip": SiglipVisionModel}


@pytest.fixture(scope="module")
def tower(merv_tower_dir):
    return MERVVisionTower(str(merv_tower_dir), SimpleNamespace()).eval()


def clip_of(frames: int, seed: int = 0, size=(30, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(frames, *size, 3), dtype=np.uint8)


def test_each_encoder_reads_its_layer_from_its_own_folder(tower, merv_tower_dir):
    """Features equal the HF model loaded by transformers from the folder: the penultimate block's output
    without CLS/registers (CLIP, DINOv2-reg, SigLIP) and ViViT's normed last state without CLS."""
    pixels = tower.image_processor.process_clip(clip_of(8))
    with torch.no_grad():
        batch = tower.encode_batch([pixels], ["video"])
        for name, cls in CLASSES.items():
            kwargs = {"add_pooling_layer": False} if cls is VivitModel else {}
            reference = cls.from_pretrained(merv_tower_dir / name, **kwargs).eval()
            if name == "vivit":
                out = reference(pixel_values=pixels[name].view(2, 4, 3, 24, 24)).last_hidden_state[:, 1:]
                expected = out.reshape(2 * 2, 6, 6, 16)  # 2 windows x 2 tubelet slots, 6x6 grid
            else:
                hidden = reference(pixel_values=pixels[name], output_hidden_states=True).hidden_states[-2]
                drop = {"languagebind": 1, "dinov2": 5, "siglip": 0}[name]
                side = {"languagebind": 4, "dinov2": 4, "siglip": 5}[name]
                expected = hidden[:, drop:].reshape(4, side, side, -1)
            torch.testing.assert_close(batch.encoders[name].features, expected, atol=1e-6, rtol=0)
    assert batch.encoders["vivit"].frames_per_item == batch.frames_per_item == [4]
    assert not any(p.requires_grad for p in tower.parameters())


def test_each_encoder_gets_its_own_frames_size_and_normalisation(tower):
    frames = np.stack([np.full((24, 24, 3), 10 * i, dtype=np.uint8) for i in range(8)])  # frame i has value 10 i
    pixels = tower.image_processor.process_clip(frames)
    assert {k: tuple(v.shape) for k, v in pixels.items()} == {
        "languagebind": (4, 3, 16, 16), "dinov2": (4, 3, 28, 28), "vivit": (8, 3, 24, 24), "siglip": (4, 3, 20, 20)}
    # ViViT (2 frames per LLM frame) sees all 8 decoded frames, the others every second one
    vivit = pixels["vivit"][:, 0, 0, 0] * 0.5 + 0.5
    torch.testing.assert_close(vivit, torch.arange(8) * 10 / 255)
    siglip = pixels["siglip"][:, 0, 0, 0] * 0.5 + 0.5
    torch.testing.assert_close(siglip, torch.arange(0, 8, 2) * 10 / 255, atol=1e-6, rtol=0)
    dino = pixels["dinov2"][:, 0, 0, 0] * 0.229 + 0.485  # ImageNet mean/std
    torch.testing.assert_close(dino, torch.arange(0, 8, 2) * 10 / 255, atol=1e-6, rtol=0)
    assert tower.image_processor.frames_to_decode(32) == 8  # the model's 4 LLM frames x 2


def test_a_short_clip_is_resampled_like_merv():
    """Fewer decoded frames than needed: MERV's linspace sampling repeats frames (documented)."""
    assert sample_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert sample_indices(16, 4).tolist() == [0, 5, 10, 15]
    with pytest.raises(ValueError, match="no frames"):
        sample_indices(0, 4)


def test_batched_equals_per_item_for_clips_of_different_lengths(tower, merv_llava):
    _, _, model, _ = merv_llava
    specs = [t.spec for t in tower.encoders.values()]
    short = MERVProcessor(specs, num_frames=2, frame_multiple=2, windows={"vivit": 4}).process_clip(clip_of(5, 1))
    long = MERVProcessor(specs, num_frames=6, frame_multiple=2, windows={"vivit": 4}).process_clip(clip_of(9, 2))
    image = tower.image_processor.preprocess(clip_of(1, 3)[0])["pixel_values"]
    items, modalities = [long, image, short], ["video", "image", "video"]
    with torch.no_grad():
        together = model.encode_visual_items(items, modalities)
        alone = [model.encode_visual_items([item], [m])[0] for item, m in zip(items, modalities)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert [t.shape[0] for t in together] == [8, 8, 8]  # grid (2, 2, 2) whatever the length
    assert model.num_visual_tokens(32) == model.num_visual_tokens(1, "image") == 8


def test_gradients_reach_exactly_the_projectors_and_the_mixer(merv_llava):
    _, tokenizer, model, processor = merv_llava
    video = processor.process_clip(clip_of(8, 4))
    image = processor.preprocess(clip_of(1, 5)[0])["pixel_values"]
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 6, 7, 8], [9, IMAGE_TOKEN_INDEX, 6, 7, 8]])
    llm = [p for n, p in model.named_parameters() if "mm_projector" not in n and "vision_tower" not in n]
    for p in llm:
        p.requires_grad_(False)  # the encoders-and-LLM-frozen case; the training test covers the LLM
    try:
        model.train()
        out = model(input_ids=ids, labels=ids.clamp(min=0), images=[video, image], modalities=["video", "image"])
        out.loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        projector = {n for n, _ in model.named_parameters() if ".mm_projector." in n}
        assert with_grad == projector
        assert {n.split("mm_projector.")[1].split(".")[0] for n in projector} == {"projectors", "mixer"}
        assert len([n for n in projector if ".projectors." in n]) == 8  # 4 encoders x (weight, bias)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        for p in llm:
            p.requires_grad_(True)


# ------------------------------------------------------------------------------------------- bad input


def _tower_copy(merv_tower_dir, tmp_path, edit):
    folder = tmp_path / "tower"
    shutil.copytree(merv_tower_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config, folder)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_missing_encoder_folder_is_named(merv_tower_dir, tmp_path):
    folder = _tower_copy(merv_tower_dir, tmp_path, lambda c, f: shutil.rmtree(f / "dinov2"))
    with pytest.raises(FileNotFoundError, match="MERV encoder 'dinov2'.*does not exist"):
        MERVVisionTower(str(folder), SimpleNamespace())


def test_an_encoder_folder_of_the_wrong_class_is_named(merv_tower_dir, tmp_path):
    def point_dinov2_at_siglip(config, folder):
        config["encoders"][1]["path"] = "siglip"

    folder = _tower_copy(merv_tower_dir, tmp_path, point_dinov2_at_siglip)
    with pytest.raises(ValueError, match=r"MERV encoder 'dinov2': .*siglip/config.json has model_type "
                                         r"'siglip_vision_model'.*Dinov2WithRegistersModel"):
        MERVVisionTower(str(folder), SimpleNamespace())


def test_encoders_whose_t_disagree_are_named(merv_tower_dir, tmp_path, tower):
    def vivit_one_frame_per_llm_frame(config, folder):
        config["encoders"][2]["frame_rate"] = 1

    folder = _tower_copy(merv_tower_dir, tmp_path, vivit_one_frame_per_llm_frame)
    with pytest.raises(ValueError, match="MERV encoder 'vivit': frame_rate 1 gives 1/2 temporal slots"):
        MERVVisionTower(str(folder), SimpleNamespace())
    pixels = tower.image_processor.process_clip(clip_of(8))
    pixels["siglip"] = pixels["siglip"][:2]  # a clip whose SigLIP input has 2 frames, the others 4
    with pytest.raises(ValueError, match="item 0: encoder 'siglip' yields 2 temporal slots but 'languagebind' yields 4"):
        tower.encode_batch([pixels], ["video"])
    del pixels["siglip"]
    with pytest.raises(ValueError, match=r"item 0 \(video\).*missing \['siglip'\]"):
        tower.encode_batch([pixels], ["video"])
