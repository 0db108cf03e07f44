"""The reducer hook points as the model calls them: features before the projector, tokens before the
splice, and inside the LLM during ``generate`` with the visual spans of the left-padded prompt."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.token_reduction import TokenReducer, register_token_reducer, unregister_token_reducer
from tests.helpers.reducers import FirstTokens

FRAMES, PER_FRAME = 4, 9  # tiny 7x7 grid, 2x2 average pooling -> 3x3


class EveryOtherFrame(TokenReducer):
    stage = "features"

    def reduce_features(self, batch):
        from llava.model.visual import VisualBatch

        keep = [list(range(0, t, 2)) for t in batch.frames_per_item]
        per_item = batch.features.split(batch.frames_per_item)
        features = torch.cat([f[k] for f, k in zip(per_item, keep)])
        return VisualBatch(features, [len(k) for k in keep], batch.modalities, None, batch.instructions,
                           None, batch.fields)

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return num_tokens_in // t * ((t + 1) // 2)


class RecordingPruner(TokenReducer):
    """Stage llm: keeps the first ``keep`` visual tokens of each row at layer 1, records the spans."""

    stage = "llm"
    seen: list = []

    def __init__(self, keep: int = 36):
        super().__init__()
        self.keep = keep
        self.llm_layer = 1

    def select_in_llm(self, ctx):
        RecordingPruner.seen.append([list(spans) for spans in ctx.visual_spans])
        return [torch.arange(s[0][0], s[0][0] + self.keep) for s in ctx.visual_spans]


@pytest.fixture(scope="module", autouse=True)
def reducers():
    for name, cls in (("test_every_other_frame", EveryOtherFrame), ("test_first_tokens", FirstTokens),
                      ("test_recording_pruner", RecordingPruner)):
        register_token_reducer(name)(cls)
    yield
    for name in ("test_every_other_frame", "test_first_tokens", "test_recording_pruner"):
        unregister_token_reducer(name)


@pytest.fixture()
def loaded(tiny_dir):
    tokenizer, model, _, _ = load_pretrained_model(str(tiny_dir / "tiny-llava-qwen"), None, "x", device_map="cpu",
                                                   torch_dtype="float32")
    return tokenizer, model


def _video(frames=FRAMES):
    torch.manual_seed(0)
    return torch.randn(frames, 3, 56, 56)


@pytest.mark.parametrize("name, options, frames, expected", [
    (None, None, 4, 4 * PER_FRAME), ("test_every_other_frame", None, 4, 2 * PER_FRAME),
    ("test_every_other_frame", None, 5, 3 * PER_FRAME), ("test_first_tokens", {"keep": 7}, 4, 7)])
def test_features_and_tokens_reducers_change_what_is_spliced(loaded, name, options, frames, expected):
    _, model = loaded
    model.get_model().set_token_reducer(name, options)
    tokens = model.encode_visual_items([_video(frames)], ["video"])[0]
    assert tokens.shape[0] == model.num_visual_tokens(frames) == expected
    ids = torch.tensor([[3, IMAGE_TOKEN_INDEX, 4, 5]])
    out = model(input_ids=ids, images=[_video(frames)], modalities=["video"])
    assert out.logits.shape[1] == 3 + expected


def test_the_reducer_is_recorded_in_the_config_and_rebuilt(loaded, tmp_path):
    tokenizer, model = loaded
    model.get_model().set_token_reducer("test_first_tokens", {"keep": 3})
    assert model.config.mm_token_reducer == "test_first_tokens"
    assert model.config.mm_token_reducer_config == {"keep": 3}
    assert not any("reducer" in name for name, _ in model.named_modules())  # outside the module tree
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, again, _, _ = load_pretrained_model(str(tmp_path), None, "x", device_map="cpu", torch_dtype="float32")
    assert again.num_visual_tokens(FRAMES) == 3
    again.get_model().set_token_reducer(None)
    assert again.num_visual_tokens(FRAMES) == FRAMES * PER_FRAME
    assert "mm_token_reducer" not in again.config.to_dict()  # no dead key


def test_generate_hands_the_llm_stage_the_spans_of_the_left_padded_prompt(loaded):
    tokenizer, model = loaded
    visual = FRAMES * PER_FRAME
    ids = torch.tensor([[7, 8, 3, IMAGE_TOKEN_INDEX, 4, 5], [0, 0, 0, 3, IMAGE_TOKEN_INDEX, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    videos = [_video(), _video()]
    plain = model.generate(ids, attention_mask=mask, images=videos, modalities=["video", "video"], max_new_tokens=3,
                           do_sample=False)
    RecordingPruner.seen.clear()
    model.get_model().set_token_reducer("test_recording_pruner", {"keep": visual})  # keeps everything
    same = model.generate(ids, attention_mask=mask, images=videos, modalities=["video", "video"], max_new_tokens=3,
                          do_sample=False)
    assert torch.equal(plain, same)
    # row 0: 3 text tokens, the video, 2 text tokens; row 1: 1 + video + 1, padded on the left
    longest, pad = 3 + visual + 2, (3 + visual + 2) - (1 + visual + 1)
    assert RecordingPruner.seen[0] == [[(3, 3 + visual)], [(pad + 1, pad + 1 + visual)]]
    assert all(not layer._forward_pre_hooks for layer in model.model.layers)  # removed after generate
    model.get_model().set_token_reducer("test_recording_pruner", {"keep": 2})
    pruned_logits = model.generate(ids, attention_mask=mask, images=videos, modalities=["video", "video"],
                                   max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True)
    model.get_model().set_token_reducer(None)
    full_logits = model.generate(ids, attention_mask=mask, images=videos, modalities=["video", "video"],
                                 max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert (pruned_logits.scores[0] - full_logits.scores[0]).abs().max() > 1e-4
