"""A short fit of the tiny DisCo projector on synthetic clips with known tiles
(:mod:`disco_plugin.tools.shortfit`: tiny-SigLIP features, a stand-in LM loss every run shares), then,
on the training clips:

* VCD on -> the groups matched to different tiles are further apart (mean pairwise cosine of their
  centred bridge states drops) than with VCD off;
* TFC on (VCD on in both, for the matching) -> a matched token's focus moves less across frames (the
  variance of its attention centroid drops).

Measured at the time of writing (seed 0, 60 steps): cosine 0.991 (VCD off) vs -0.030 (on); variance
1.342 (TFC off) vs 0.359 (on).
"""

from __future__ import annotations

import pytest
import torch

from disco_plugin.tools.shortfit import fit, make_clips, measure


@pytest.fixture(scope="module")
def measured(tiny_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the fits are tiny: one thread beats several fighting over shared cores
    try:
        siglip = tiny_dir / "siglip-tiny"
        clips = make_clips(siglip)
        return {w: measure(fit(siglip, clips, *w), clips) for w in ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))}
    finally:
        torch.set_num_threads(before)


def test_vcd_moves_tokens_of_different_instances_apart(measured):
    off, on = measured[(0.0, 0.0)][0], measured[(1.0, 0.0)][0]
    print(f"centred mean pairwise cosine of matched groups: VCD off {off:.3f}, VCD on {on:.3f}")
    assert on < off - 0.2


def test_tfc_keeps_a_matched_token_on_the_same_place(measured):
    off, on = measured[(1.0, 0.0)][1], measured[(1.0, 1.0)][1]
    print(f"focus-location variance across frames of matched tokens: TFC off {off:.4f}, TFC on {on:.4f}")
    assert on < 0.5 * off
