"""P4's analytic FLOP counts against torch's own count of the real modules' matrix products."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import SiglipVisionConfig, SiglipVisionModel

from benchmarks.flops import SiglipShape, compressor_flops, run, siglip_vision_flops
from hicom_plugin import PRESETS, HIComCompressor

D, DT, DOUT, FRAMES, GRID, TEXT_LEN = 64, 48, 96, 8, 9, 5
INJECTIONS = ("none", "direct", "coarse", "fine")


def measured_flops(module: HIComCompressor, frames: int) -> int:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(frames, GRID, GRID, D, generator=g)
    with FlopCounterMode(display=False) as counter:
        module(feats, [frames], ["video"], dense_embeds=feats, text_pooled=torch.randn(1, DT, generator=g),
               text_tokens=torch.randn(1, TEXT_LEN, DT, generator=g))
    return counter.get_total_flops()


@pytest.mark.parametrize("folded", [True, False])
@pytest.mark.parametrize("preset, kind", list(itertools.product(["paper", "release"], INJECTIONS)))
def test_compressor_count_equals_flop_counter(preset, kind, folded):
    cfg = PRESETS[preset].replace(local_injection=kind, global_injection=kind, attn_head_dim=16)
    module = HIComCompressor(cfg, D, DT, DOUT)
    module.fold_attention = folded
    analytic = compressor_flops(cfg, FRAMES, GRID, D, DT, DOUT, text_len=TEXT_LEN, folded=folded)
    assert analytic["total"] == measured_flops(module, FRAMES)


@pytest.mark.parametrize("changes", [
    dict(preset="release", adapt_k=True, adapt_v=True, global_adapt_g=True),
    dict(preset="paper", local_injection="coarse", adapt_q=True, adapt_g=True, group_scheme="overlap"),
])
def test_compressor_count_with_adapters(changes):
    cfg = PRESETS[changes.pop("preset")].replace(attn_head_dim=16, **changes)
    analytic = compressor_flops(cfg, FRAMES, GRID, D, DT, DOUT, text_len=TEXT_LEN)
    assert analytic["total"] == measured_flops(HIComCompressor(cfg, D, DT, DOUT), FRAMES)


def test_siglip_count_equals_flop_counter():
    shape = SiglipShape(layers=2, width=64, mlp=128, heads=4, image=56, patch=14)
    config = SiglipVisionConfig(hidden_size=shape.width, intermediate_size=shape.mlp, num_hidden_layers=shape.layers,
                                num_attention_heads=shape.heads, image_size=shape.image, patch_size=shape.patch,
                                vision_use_head=False)
    # eager attention: its two products are plain matmuls that the counter sees on any backend
    tower = SiglipVisionModel._from_config(config, attn_implementation="eager").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tower(pixel_values=torch.randn(3, 3, shape.image, shape.image))
    assert siglip_vision_flops(3, shape)["total"] == counter.get_total_flops()


def test_so400m_numbers_and_the_share():
    tower = siglip_vision_flops(32)
    assert SiglipShape().tokens == 729
    assert tower["total"] == pytest.approx(21.33e12, rel=1e-3)  # ~667 GFLOP per frame
    release, paper = run()
    assert release.id == paper.id == "P4" and release.unit == "GFLOP"
    assert release.ratio == pytest.approx(release.ours / release.baseline)
    # Folding and attending the identical direct-injection queries once leave mostly the local readout.
    readout = release.details["compressor"]["local.readout"]
    assert readout == 2 * 648 * (1152 * 3584 + 3584 * 3584)
    assert release.details["compressor"]["total"] < 1.1 * (readout + 2 * 32 * (1152 * 3584 + 3584 ** 2))
    assert release.details["compressor_textbook"]["global.attention"] > 100e9  # 23,328 keys projected
    assert release.met and paper.met and release.ratio < paper.ratio < 0.02
