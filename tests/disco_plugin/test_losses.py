"""VCD and TFC on padded batches against straightforward re-statements of the prototype's ragged code
(``ZJHTerry18/STEP`` ``MultiModalLLM_fg_PT_2.vtc_loss`` / ``vid_tc_loss``, read, not copied), and their
defining properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from disco_plugin.losses import tfc_loss, vcd_loss
from disco_plugin.matching import match_instances


def _reference_vcd(u_matched: torch.Tensor, e_matched: torch.Tensor, nums: list[int], temp: float) -> torch.Tensor:
    """The prototype's form: all matched pairs of the batch concatenated, logits outside each sample's
    block set to -1e9, diagonal targets, mean row and column cross-entropies, halved."""
    sim = u_matched @ e_matched.T
    mask = torch.zeros_like(sim)
    start = 0
    for n in nums:
        mask[start:start + n, start:start + n] = 1
        start += n
    v2t = (sim / temp).masked_fill(mask == 0, -1e9)
    t2v = (sim.T / temp).masked_fill(mask.T == 0, -1e9)
    eye = torch.eye(len(sim))
    loss_v2t = -(F.log_softmax(v2t, dim=1) * eye).sum(1).mean()
    loss_t2v = -(F.log_softmax(t2v, dim=1) * eye).sum(1).mean()
    return (loss_v2t + loss_t2v) / 2


def _reference_tfc(feats: torch.Tensor, temp: float) -> torch.Tensor:
    """The prototype's form on ``(B, n, T, C)`` with every frame and token real."""
    feats = F.normalize(feats, dim=-1)
    centres = feats.mean(2)
    sim = torch.einsum("bntc,bmc->bntm", feats, centres).permute(0, 2, 1, 3)
    sim_t = sim.transpose(2, 3)
    eye = torch.zeros_like(sim)
    eye[:] = torch.eye(sim.shape[-1])
    a = -(F.log_softmax(sim / temp, dim=3) * eye).sum(2).mean()
    b = -(F.log_softmax(sim_t / temp, dim=3) * eye.transpose(2, 3)).sum(2).mean()
    return (a + b) / 2


def _padded_batch(counts, groups=4, dim=8, seed=0):
    torch.manual_seed(seed)
    u = F.normalize(torch.randn(len(counts), groups, dim), dim=-1)
    width = max(max(counts), 1)
    e = F.normalize(torch.randn(len(counts), width, dim), dim=-1)
    mask = torch.arange(width)[None] < torch.tensor(counts)[:, None]
    return u, e, mask


def test_vcd_equals_the_prototype_on_ragged_pairs():
    counts = [3, 0, 4, 2]
    u, e, mask = _padded_batch(counts)
    assignment = match_instances(u @ e.transpose(1, 2), mask)
    ours = vcd_loss(u, e, assignment, mask, torch.tensor(0.07), "video")
    um = torch.cat([u[i, assignment[i, :c]] for i, c in enumerate(counts)])
    em = torch.cat([e[i, :c] for i, c in enumerate(counts)])
    ref = _reference_vcd(um, em, counts, 0.07)
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)


def test_vcd_batch_negatives_is_one_block():
    counts = [3, 2]
    u, e, mask = _padded_batch(counts, seed=1)
    assignment = match_instances(u @ e.transpose(1, 2), mask)
    ours = vcd_loss(u, e, assignment, mask, torch.tensor(0.1), "batch")
    um = torch.cat([u[i, assignment[i, :c]] for i, c in enumerate(counts)])
    em = torch.cat([e[i, :c] for i, c in enumerate(counts)])
    assert float(ours) == pytest.approx(float(_reference_vcd(um, em, [sum(counts)], 0.1)), abs=1e-6)
    assert float(ours) > float(vcd_loss(u, e, assignment, mask, torch.tensor(0.1), "video"))


def test_vcd_batched_equals_per_item_mean_over_pairs():
    counts = [2, 4, 1]
    u, e, mask = _padded_batch(counts, seed=2)
    assignment = match_instances(u @ e.transpose(1, 2), mask)
    batched = vcd_loss(u, e, assignment, mask, torch.tensor(0.07))
    per_item = [vcd_loss(u[i:i + 1], e[i:i + 1, :c], assignment[i:i + 1, :c], mask[i:i + 1, :c], torch.tensor(0.07))
                for i, c in enumerate(counts)]
    weighted = sum(loss * c for loss, c in zip(per_item, counts)) / sum(counts)
    assert float(batched) == pytest.approx(float(weighted), abs=1e-6)


def test_vcd_values_at_the_extremes():
    m = 3
    mask = torch.ones(1, m, dtype=torch.bool)
    assignment = torch.arange(m)[None]
    same = F.normalize(torch.ones(1, m, 4), dim=-1)
    assert float(vcd_loss(same, same, assignment, mask, torch.tensor(0.07))) == pytest.approx(math.log(m), abs=1e-5)
    ortho = torch.eye(m)[None]
    assert float(vcd_loss(ortho, ortho, assignment, mask, torch.tensor(0.01))) < 1e-6


def test_vcd_other_items_never_enter_a_video_negative_loss():
    counts = [3, 2]
    u, e, mask = _padded_batch(counts, seed=3)
    assignment = match_instances(u @ e.transpose(1, 2), mask)
    u2, e2 = u.clone(), e.clone()
    u2[1], e2[1] = F.normalize(torch.randn_like(u2[1]), dim=-1), F.normalize(torch.randn_like(e2[1]), dim=-1)
    alone = vcd_loss(u[:1], e[:1], assignment[:1], mask[:1], torch.tensor(0.07))
    for uu, ee in ((u, e), (u2, e2)):
        full = vcd_loss(uu, ee, assignment, mask, torch.tensor(0.07))
        other = vcd_loss(uu[1:], ee[1:], assignment[1:], mask[1:], torch.tensor(0.07))
        assert float(full) == pytest.approx(float((alone * 3 + other * 2) / 5), abs=1e-6)


def test_vcd_without_instances_is_zero_with_a_graph():
    u, e, _ = _padded_batch([1, 1], seed=4)
    u.requires_grad_(True)
    mask = torch.zeros(2, 1, dtype=torch.bool)
    loss = vcd_loss(u, e, torch.zeros(2, 1, dtype=torch.long), mask, torch.tensor(0.07))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(u.grad, torch.zeros_like(u))


def test_tfc_equals_the_prototype_when_everything_is_real():
    torch.manual_seed(5)
    feats = torch.randn(2, 6, 4, 16)  # (B, K, T, C)
    ours = tfc_loss(feats, torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool), torch.tensor(0.07))
    assert float(ours) == pytest.approx(float(_reference_tfc(feats, 0.07)), abs=1e-6)


def test_tfc_padded_frames_and_tokens_equal_the_unpadded_items():
    torch.manual_seed(6)
    frames, k = [4, 2], 5
    feats = torch.randn(2, k, 4, 16)
    valid = torch.arange(4)[None] < torch.tensor(frames)[:, None]
    tokens = torch.ones(2, k, dtype=torch.bool)
    tokens[1, 3:] = False
    batched = tfc_loss(feats, valid, tokens, torch.tensor(0.1))
    first = _reference_tfc(feats[:1], 0.1)
    second = _reference_tfc(feats[1:, :3, :2], 0.1)
    expected = (first * 4 * k + second * 2 * 3) / (4 * k + 2 * 3)
    assert float(batched) == pytest.approx(float(expected), abs=1e-6)


def test_tfc_identical_features_give_log_k_and_nothing_gives_zero():
    k = 6
    feats = torch.ones(1, k, 3, 8)
    every = torch.ones(1, 3, dtype=torch.bool)
    assert float(tfc_loss(feats, every, torch.ones(1, k, dtype=torch.bool), torch.tensor(0.07))) == pytest.approx(
        math.log(k), abs=1e-5)
    feats.requires_grad_(True)
    none = tfc_loss(feats, every, torch.zeros(1, k, dtype=torch.bool), torch.tensor(0.07))
    assert float(none.detach()) == 0.0 and none.requires_grad
