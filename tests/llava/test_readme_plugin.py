"""The README's example plugin runs as printed: it registers, its flags parse, and a model built with it
trains on the LM loss plus its weighted auxiliary loss."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from llava import registry

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_plugin_source() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- example-plugin -->\n```python\n(.*?)```\n<!-- /example-plugin -->", text, re.S)
    assert found, "README.md lost its example plugin block"
    return found.group(1)


@pytest.fixture
def readme_plugin(monkeypatch):
    module = types.ModuleType("readme_plugin")
    monkeypatch.setitem(sys.modules, "readme_plugin", module)  # dataclasses look their module up
    exec(compile(readme_plugin_source(), str(README), "exec"), module.__dict__)
    registry.load_plugins()
    module.register()
    yield module
    from llava.model.multimodal_projector.builder import PROJECTORS
    from llava.plugin import PLUGINS

    PROJECTORS.unregister("frame_mean")
    PLUGINS.unregister("frame_mean")


def test_the_readme_example_is_about_30_lines():
    lines = [line for line in readme_plugin_source().splitlines() if line.strip()]
    assert len(lines) <= 45


def test_readme_plugin_flags_and_groups(readme_plugin):
    from llava.train.arguments import parse_args

    model_args, _, training_args = parse_args([
        "--output_dir", "out", "--mm_tunable_parts", "mm_mlp_adapter,frame_mean_gate",
        "--frame_mean_gate_lr", "1e-4", "--frame_mean_sparsity", "0.1"])
    assert model_args.mm_tunable_parts == "mm_mlp_adapter,frame_mean_gate"
    assert training_args.frame_mean_gate_lr == pytest.approx(1e-4)
    assert training_args.frame_mean_sparsity == pytest.approx(0.1)


def test_readme_plugin_model_adds_its_weighted_loss(readme_plugin, tiny_dir, tmp_path):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.model.builder import assemble_llava_qwen, load_pretrained_model
    from llava.train.tunable import model_parts

    out = assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", tmp_path / "m",
                              mm_projector_type="frame_mean", aux_loss_weights={"frame_mean_sparsity": 0.25})
    _, model, _, _ = load_pretrained_model(str(out), None, "x", device_map="cpu", torch_dtype="float32")
    assert len(model_parts(model)["frame_mean_gate"]) == 2
    ids = torch.tensor([[3, IMAGE_TOKEN_INDEX, 4, 5, 6]])
    video = torch.randn(3, 3, 56, 56)
    assert model.num_visual_tokens(3) == len(model.encode_visual_items([video], ["video"])[0]) == 3
    with torch.no_grad():
        result = model(input_ids=ids, labels=ids.clamp(min=0), images=[video], modalities=["video"],
                       sample_fields={"tags": [["a"]]})
    labels = torch.tensor([[3] + [-100] * 3 + [4, 5, 6]])
    lm = torch.nn.functional.cross_entropy(result.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    sparsity = result.aux_losses["frame_mean_sparsity"]
    assert sparsity > 0
    assert float(result.loss) == pytest.approx(float(lm + 0.25 * sparsity), rel=1e-5)
