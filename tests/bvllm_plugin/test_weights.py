"""The LAVIS InstructBLIP Q-Former importer, on a LAVIS-layout state dict built here from a random tiny
HF Q-Former (the key names written out from LAVIS's ``BertModel``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bvllm_plugin.projector import BVLLMProjector
from bvllm_plugin.weights import QFormerImportError, import_lavis_qformer

VISION, LLM = 32, 64


def projector(delay_load: bool = False, **config) -> BVLLMProjector:
    settings = dict(mm_hidden_size=VISION, hidden_size=LLM, bvllm_preset="tiny", bvllm_qformer_tokenizer="tiny")
    return BVLLMProjector(SimpleNamespace(**{**settings, **config}), delay_load=delay_load)


def lavis_layout(seed: int = 5) -> dict[str, torch.Tensor]:
    """What ``torch.load(instruct_blip_*.pth)["model"]`` holds, at tiny size, with random values."""
    torch.manual_seed(seed)
    source = projector().temporal_qformer
    state = {}
    for name, value in source.state_dict().items():
        lavis = name.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
        lavis = lavis.replace(".attention.attention.", ".attention.self.")
        lavis = lavis.replace(".crossattention.attention.", ".crossattention.self.")
        state[f"Qformer.bert.{lavis}"] = torch.randn_like(value)
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(512)[None]
    state["query_tokens"] = torch.randn(1, 8, 32)
    state["ln_vision.weight"], state["ln_vision.bias"] = torch.randn(VISION), torch.randn(VISION)
    state["llm_proj.weight"], state["llm_proj.bias"] = torch.randn(16, 32), torch.randn(16)
    return state


def test_both_qformers_take_every_tensor():
    state = lavis_layout()
    p = projector()
    import_lavis_qformer(p, state)
    checks = {
        "embeddings.layernorm.weight": "Qformer.bert.embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.attention.query.weight": "Qformer.bert.encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.crossattention.attention.value.bias": "Qformer.bert.encoder.layer.0.crossattention.self.value.bias",
        "encoder.layer.1.output_query.LayerNorm.bias": "Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias",
    }
    for qformer in (p.temporal_qformer, p.spatial_qformer):
        own = qformer.state_dict()
        for hf, lavis in checks.items():
            assert torch.equal(own[hf], state[lavis]), hf
        assert len(own) == len([k for k in state if k.startswith("Qformer.bert.")]) - 1  # position_ids is a buffer
        assert all(torch.equal(v, state["Qformer.bert." + k.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
                                     .replace(".attention.attention.", ".attention.self.")
                                     .replace(".crossattention.attention.", ".crossattention.self.")])
                   for k, v in own.items())
    assert torch.equal(p.temporal_queries, state["query_tokens"]) and torch.equal(p.spatial_queries, state["query_tokens"])
    assert torch.equal(p.ln_vision.weight, state["ln_vision.weight"])


def test_a_file_or_folder_given_in_the_config_initialises_the_qformers(tmp_path):
    state = lavis_layout()
    torch.save({"model": state}, tmp_path / "instruct_blip_tiny.pth")
    for path in (tmp_path, tmp_path / "instruct_blip_tiny.pth"):
        p = projector(bvllm_qformer_init=str(path))
        assert torch.equal(p.spatial_qformer.embeddings.word_embeddings.weight,
                           state["Qformer.bert.embeddings.word_embeddings.weight"])
    # a saved model (built with delay_load) has the weights in its checkpoint and never reads the file
    projector(delay_load=True, bvllm_qformer_init=str(tmp_path / "gone.pth"))


def test_missing_file_and_mismatched_keys_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.pth does not exist"):
        projector(bvllm_qformer_init=str(tmp_path / "gone.pth"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected exactly one checkpoint .* found \[\]"):
        projector(bvllm_qformer_init=str(empty))
    state = lavis_layout()
    del state["Qformer.bert.encoder.layer.1.output.dense.weight"]
    state["Qformer.bert.encoder.layer.0.attention.weird.weight"] = torch.zeros(1)
    with pytest.raises(QFormerImportError, match=r"missing 1: \['Qformer.bert.encoder.layer.1.output.dense.weight'\]"
                       r".*unexpected 1: \['Qformer.bert.encoder.layer.0.attention.weird.weight'\]"):
        import_lavis_qformer(projector(), state)
    wide = lavis_layout()
    wide["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"] = torch.zeros(32, 1408)
    with pytest.raises(QFormerImportError, match=r"crossattention.self.key.weight \(32, 1408\) vs \(32, 32\).*"
                                                 r"qformer_vision_width=1408"):
        import_lavis_qformer(projector(), wide)


def test_an_input_adapter_reads_a_wider_qformer():
    """``qformer_vision_width`` (InstructBLIP's 1408 at real scale, 48 here): the adapter maps the 32-d
    features to the checkpoint's cross-attention width, which then loads; the forward runs."""
    from llava.model.visual import VisualBatch

    state = lavis_layout()
    for key in [k for k in state if ".crossattention.self.key.weight" in k or ".crossattention.self.value.weight" in k]:
        state[key] = torch.randn(32, 48)
    state["ln_vision.weight"], state["ln_vision.bias"] = torch.randn(48), torch.randn(48)
    with pytest.raises(QFormerImportError, match="qformer_vision_width"):
        import_lavis_qformer(projector(), state)
    p = projector(bvllm_overrides={"qformer_vision_width": 48})
    import_lavis_qformer(p, state)
    assert p.input_adapter.weight.shape == (48, VISION)
    feats = torch.randn(5, 3, 3, VISION)
    with torch.no_grad():
        tokens = p.eval()(VisualBatch(feats, [4, 1], ["video", "image"], instructions=["red", "blue"]))
    assert tokens[1].shape == (8, LLM) and 8 <= tokens[0].shape[0] <= p.num_output_tokens(4, 3, 3)
