"""The B-VLLM projector on tiny random weights: equivalence with a per-sample restatement of the public
forward, batching over items of different lengths, determinism, conditioning, budgets, the parts each
stage trains, and bad input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bvllm_plugin.config import BVLLMConfig
from bvllm_plugin.merge import bipartite_merge, slot_merge_plan
from bvllm_plugin.projector import BVLLMProjector
from llava.model.visual import VisualBatch
from tests.bvllm_plugin.reference import reference_item, tome_step

VISION, LLM, GRID = 32, 64, 3
QUESTIONS = ["what is the red square doing?", "how many blue circles are there?", "describe the video"]


def build(seed: int = 0, **overrides) -> BVLLMProjector:
    torch.manual_seed(seed)
    config = SimpleNamespace(mm_hidden_size=VISION, hidden_size=LLM, bvllm_preset="tiny",
                             bvllm_qformer_tokenizer="tiny", bvllm_overrides=overrides)
    return BVLLMProjector(config).eval()


def sharpen(p: BVLLMProjector, scale: float = 40.0) -> BVLLMProjector:
    """Peaky selection (near one-hot slots), as a trained selector gives, so slots differ and merges vary."""
    with torch.no_grad():
        p.selector_proj.weight.mul_(scale)
    return p


def features(counts: list[int], seed: int = 1) -> torch.Tensor:
    return torch.randn(sum(counts), GRID, GRID, VISION, generator=torch.Generator().manual_seed(seed))


def batch_of(counts, modalities=None, questions=None, seed=1) -> VisualBatch:
    modalities = modalities or ["image" if t == 1 else "video" for t in counts]
    return VisualBatch(features(counts, seed), list(counts), modalities,
                       instructions=list(questions or QUESTIONS[: len(counts)]))


@pytest.mark.parametrize("overrides, tome", [
    ({}, False),  # paper: temporal order kept by sorting
    ({"temporal_sort": False, "descriptor": "first_token"}, True),  # the code: slot order, CLS descriptor
    ({"merge_threshold": 0.6, "budget": 16}, True),  # more merging, ToMe to int(2 / k′ · 8) per slot
])
def test_equivalent_to_the_public_forward_per_sample(overrides, tome):
    """Selection, merge, sampling and tokens of a batch == the per-sample restatement, ≤1e-5 (fp32), with
    and without Gumbel noise (the same noise drawn for both)."""
    p = sharpen(build(**overrides))
    p.keep_intermediates = True
    counts = [6, 1, 4]
    batch = batch_of(counts)
    items = batch.features.split(counts)
    noise = torch.randn(len(counts), p.bvllm.num_slots, max(counts), generator=torch.Generator().manual_seed(9))
    merged_any = fired = False
    for use_noise in (False, True):
        if use_noise:
            p.bvllm = p.bvllm.replace(eval_gumbel_noise=True)
            p.gumbel_noise = lambda like: noise  # noqa: E731 - the draw both sides share
        with torch.no_grad():
            tokens = p(batch)
        state = p.last_selection
        for i, (t, feats, text) in enumerate(zip(counts, items, QUESTIONS)):
            with torch.no_grad():
                ref = reference_item(p, feats, text, noise[i, :, :t] if use_noise else None)
            if t > 1:
                torch.testing.assert_close(state["weights"][i, :, :t], ref["weights"], atol=1e-5, rtol=0)
            assert state["kept_slots"][i] == ref["slots"].shape[0]
            merged_any |= ref["slots"].shape[0] < p.bvllm.num_slots and t > 1
            fired |= ref["sampled"].shape[1] < p.bvllm.spatial_queries
            torch.testing.assert_close(state["slots"][i], ref["slots"], atol=1e-5, rtol=0)
            torch.testing.assert_close(state["sampled"][i], ref["sampled"].flatten(0, 1), atol=1e-5, rtol=0)
            torch.testing.assert_close(tokens[i], ref["tokens"], atol=1e-5, rtol=0)
    assert merged_any and fired == tome  # both merges are exercised where they should be


def test_merges_on_hand_built_selections():
    """No merge, a single merge, a chain (a source pointing at a source is lost) and all-equal rows."""
    none = torch.eye(4)[None]  # four distinct one-hot slots
    adjacency, kept = slot_merge_plan(none, 0.75, torch.tensor([False]))
    assert kept.tolist() == [[True] * 4] and torch.equal(adjacency[0], torch.eye(4, dtype=torch.bool))
    single = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0.99, 0.01, 0]]])  # slot 2 ≈ slot 0
    adjacency, kept = slot_merge_plan(single, 0.75, torch.tensor([False]))
    assert kept.tolist() == [[True, True, False]] and adjacency[0, 0].tolist() == [True, False, True]
    chain = torch.tensor([[[1.0, 0, 0], [0.6, 0.4, 0], [0.2, 0.8, 0]]])  # 1 -> 0 and 2 -> 1 (a source)
    adjacency, kept = slot_merge_plan(chain, 0.75, torch.tensor([False]))
    assert kept.tolist() == [[True, False, False]] and adjacency[0, 0].tolist() == [True, True, False]
    equal = torch.full((1, 4, 3), 1 / 3)
    _, kept = slot_merge_plan(equal, 0.75, torch.tensor([False]))
    assert kept.sum().item() == 1


def test_tome_step_matches_the_restatement_and_counts():
    x = torch.randn(3, 8, 5, generator=torch.Generator().manual_seed(2))
    out = bipartite_merge(x, 3)
    assert out.shape == (3, 5, 5)
    for row in range(3):
        torch.testing.assert_close(out[row], tome_step(x[row], 3), atol=1e-6, rtol=0)


def test_batched_equals_per_item_for_videos_of_different_lengths():
    """≤1e-6 fp32, every budget mode; item order and neighbours do not matter."""
    for overrides in ({}, {"budget_mode": "exact", "budget": 20}):
        p = sharpen(build(**overrides))
        counts = [5, 1, 3, 2]
        batch = batch_of(counts, questions=QUESTIONS + ["where is it"])
        with torch.no_grad():
            together = p(batch)
            for i, (feats, t) in enumerate(zip(batch.features.split(counts), counts)):
                alone = p(VisualBatch(feats, [t], [batch.modalities[i]], instructions=[batch.instructions[i]]))[0]
                torch.testing.assert_close(together[i], alone, atol=1e-6, rtol=0)


def test_eval_is_deterministic_and_training_samples_noise():
    p = build()
    batch = batch_of([4, 3])
    with torch.no_grad():
        first, second = p(batch), p(batch)
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        p.bvllm = p.bvllm.replace(eval_gumbel_noise=True)  # the public code's behaviour
        noisy = p(batch)
        assert not torch.allclose(noisy[0][: first[0].shape[0]], first[0]) or noisy[0].shape != first[0].shape


def test_token_counts_in_each_budget_mode():
    """Upper bound: R·k′ (≤ num_visual_tokens); exact: θ for every video; images: R."""
    p = sharpen(build())
    counts = [5, 1, 3, 2]
    with torch.no_grad():
        tokens = p(batch_of(counts, questions=QUESTIONS + ["x"]))
    cfg = p.bvllm
    for out, t, k in zip(tokens, counts, p.last_selection["kept_slots"]):
        assert out.shape == (sum(cfg.slot_tokens(k, t == 1)), LLM)
        assert out.shape[0] <= p.num_output_tokens(t, GRID, GRID)
    assert tokens[1].shape[0] == cfg.spatial_queries
    exact = sharpen(build(budget_mode="exact", budget=20))
    with torch.no_grad():
        tokens = exact(batch_of(counts, questions=QUESTIONS + ["x"]))
    assert [x.shape[0] for x in tokens] == [20, 8, 20, 20]
    assert [exact.num_output_tokens(t, GRID, GRID) for t in counts] == [20, 8, 20, 20]


def test_so400m_geometry_token_counts():
    """The numbers of the closing note: SigLIP-so400m 27×27, R = 32, θ = 576 (faithful) and θ = 680 (exact)."""
    faithful = BVLLMConfig()
    assert faithful.token_count_range(1) == (32, 32)
    for t in (32, 64, 128):
        assert faithful.token_count_range(t) == (32, 512)
    exact = BVLLMConfig(budget_mode="exact", budget=680, num_slots=22)
    assert [exact.num_output_tokens(t) for t in (1, 32, 64, 128)] == [32, 680, 680, 680]
    assert exact.slot_tokens(22, False) == [31] * 20 + [30] * 2


def test_questions_change_the_selected_frames_and_tokens(tmp_path):
    """Same video, two questions (the picture's toy: a selector trained to weigh the frame a question
    names): every slot picks that frame, identical slots merge into one, the tokens differ."""
    from benchmarks.bvllm_picture import LESSONS, conditioned_selector, draw, selections

    p, feats = conditioned_selector()
    panels = selections(p, feats)
    for panel, (_, frame) in zip(panels, LESSONS):
        assert panel["weights"].argmax(dim=-1).tolist() == [frame] * p.bvllm.num_slots
        assert sum(panel["kept"]) == 1 and panel["tokens"] == p.bvllm.spatial_queries
    with torch.no_grad():
        outs = [p(VisualBatch(feats, [feats.shape[0]], ["video"], instructions=[q]))[0] for q, _ in LESSONS]
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    assert draw(panels, tmp_path / "selection.png").stat().st_size > 0


STAGE_PARTS = {1: ("bvllm_selector", "bvllm_linears"), 2: ("bvllm_selector", "bvllm_sampler", "bvllm_linears")}


@pytest.mark.parametrize("stage", [1, 2])
def test_forward_backward_reaches_exactly_the_parts_a_stage_trains(stage):
    p = sharpen(build(), scale=4.0).train()
    parts = p.tunable_parts()
    assert sorted(id(x) for ps in parts.values() for x in ps) == sorted(id(x) for x in p.parameters())
    p.requires_grad_(False)
    trained = {id(x) for name in STAGE_PARTS[stage] for x in parts[name]}
    for x in p.parameters():
        x.requires_grad_(id(x) in trained)
    tokens = p(batch_of([4, 1, 3]))
    sum((t ** 2).mean() for t in tokens).backward()
    names = {id(x): n for n, x in p.named_parameters()}
    without = sorted(names[i] for i in trained if dict(p.named_parameters())[names[i]].grad is None)
    assert not without, without
    frozen_with = sorted(n for n, x in p.named_parameters() if id(x) not in trained and x.grad is not None)
    assert not frozen_with, frozen_with
    for name in STAGE_PARTS[stage]:
        assert any(x.grad.abs().sum() > 0 for x in parts[name]), name


@pytest.mark.parametrize("overrides, match", [
    ({"budget": 4}, r"BVLLMConfig.budget=4: smaller than one frame's R=8"),
    ({"merge_threshold": 1.5}, r"merge_threshold=1.5: .*\[0, 1\]"),
    ({"merge_threshold": -0.1}, r"merge_threshold=-0.1"),
    ({"budget_mode": "exact", "budget": 40}, r"budget=40: exact mode gives at most num_slots x R = 4 x 8 = 32"),
    ({"num_slots": 9}, r"num_slots=9"),
    ({"nonsense": 1}, r"unknown fields \['nonsense'\]"),
])
def test_bad_options_are_refused_naming_the_value(overrides, match):
    with pytest.raises(ValueError, match=match):
        build(**overrides)


def test_missing_tokenizer_or_instructions_are_clear_errors(tmp_path):
    config = SimpleNamespace(mm_hidden_size=VISION, hidden_size=LLM, bvllm_preset="tiny")
    with pytest.raises(ValueError, match="needs bvllm_qformer_tokenizer"):
        BVLLMProjector(config)
    config = SimpleNamespace(mm_hidden_size=VISION, hidden_size=LLM, bvllm_preset="tiny",
                             bvllm_qformer_tokenizer=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BVLLMProjector(config)
    with pytest.raises(ValueError, match="conditioned on instructions"):
        build()(VisualBatch(features([2]), [2], ["video"]))


def test_temperature_anneals_over_training_forwards_only():
    p = build(gumbel_tau=0.5, gumbel_tau_final=0.1, tau_anneal_steps=4).train()
    assert p.tau == pytest.approx(0.5)
    batch = batch_of([3, 2])
    with torch.no_grad():
        for _ in range(2):
            p(batch)
        assert p.tau == pytest.approx(0.3)
        p.eval()(batch)
        assert p.tau == pytest.approx(0.3)  # eval calls do not count
        p.train()
        for _ in range(5):
            p(batch)
    assert p.tau == pytest.approx(0.1)
