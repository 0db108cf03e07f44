"""FastV on a tiny random Qwen2 (SDPA), against eager attention and a hand-written layer loop."""

from __future__ import annotations

import pytest
import torch

from llava.model.token_reduction import llm_reduction
from reducers_plugin.fastv import FastV, average_tokens, keep_for_average

WIDTH = 32
PREFIX, VISUAL, SUFFIX = 3, 10, 4


def _prompt(rows: int = 2):
    """Left-padded rows (the second two tokens shorter): embeddings, mask, positions, visual spans."""
    length = PREFIX + VISUAL + SUFFIX
    embeds = torch.randn(rows, length, WIDTH, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1:, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    spans = [[(PREFIX, PREFIX + VISUAL)] for _ in range(rows)]
    return embeds, mask, positions, spans


class Recording(FastV):
    """FastV that keeps the context it was given."""

    def select_in_llm(self, ctx):
        self.ctx = ctx
        return super().select_in_llm(ctx)


@torch.no_grad()
@pytest.mark.parametrize("layer, prune_ratio", [(1, 0.5), (2, 0.75), (3, 0.3)])
def test_fastv_keeps_the_top_tokens_of_eager_last_row_attention(models, layer, prune_ratio):
    model, eager = models
    embeds, mask, positions, spans = _prompt()
    reducer = Recording(layer=layer, prune_ratio=prune_ratio)
    with llm_reduction(model, reducer, spans) as session:
        model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    attn = eager(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                 output_attentions=True).attentions[layer - 1]  # (B, H, L, L)
    # the recomputed row equals eager's last row at layer K-1
    torch.testing.assert_close(reducer.ctx.attention[:, :, 0], attn[:, :, -1], atol=1e-5, rtol=0)
    keep = round(VISUAL * (1 - prune_ratio))
    for row in range(embeds.shape[0]):
        score = attn[row, :, -1, PREFIX : PREFIX + VISUAL].mean(0)
        expected = (score.topk(keep).indices + PREFIX).sort().values
        kept = session.kept_positions[row]
        visual = kept[(kept >= PREFIX) & (kept < PREFIX + VISUAL)]
        assert visual.tolist() == expected.tolist()
        assert int((kept >= 0).sum()) == embeds.shape[1] - (VISUAL - keep)  # all text and padding kept


@torch.no_grad()
def test_fastv_logits_equal_a_hand_written_pruned_forward(models):
    model, _ = models
    embeds, _, positions, spans = _prompt(rows=1)
    reducer = Recording(layer=2, budget=4)
    with llm_reduction(model, reducer, spans) as session:
        logits = model(inputs_embeds=embeds, position_ids=positions).logits[0, -1]
    keep = session.kept_positions[0]
    assert keep.numel() == PREFIX + 4 + SUFFIX
    h, pos = embeds, positions
    layers = model.model.layers
    for i, layer in enumerate(layers):
        if i == reducer.layer:
            h, pos = h[:, keep], pos[:, keep]
        n = h.shape[1]
        causal = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
        h = layer(h, attention_mask=causal, position_embeddings=model.model.rotary_emb(h, pos), position_ids=pos)
    reference = model.lm_head(model.model.norm(h))[0, -1]
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)


@torch.no_grad()
def test_fastv_at_prune_ratio_zero_equals_no_reducer(models):
    model, _ = models
    embeds, mask, positions, spans = _prompt()
    plain = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    tokens = model.generate(**kwargs)
    with llm_reduction(model, FastV(layer=2, prune_ratio=0.0), spans):
        reduced = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    with llm_reduction(model, FastV(layer=2, prune_ratio=0.0), spans):
        again = model.generate(**kwargs)
    torch.testing.assert_close(reduced, plain, atol=1e-5, rtol=0)
    assert torch.equal(again, tokens)
    with llm_reduction(model, FastV(layer=2, prune_ratio=0.5), spans):
        pruned = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    assert (pruned[:, -1] - plain[:, -1]).abs().max() > 1e-3  # pruning does change the answer


def test_fastv_average_budget_arithmetic_and_options():
    # HICom's 680 at 32 frames on Qwen2-7B (28 layers): R = 249 after K = 2, 8 after K = 3
    assert keep_for_average(6272, 680, 2, 28) == 249 and keep_for_average(6272, 680, 3, 28) == 8
    assert average_tokens(6272, 249, 2, 28) <= 680 < average_tokens(6272, 250, 2, 28)
    with pytest.raises(ValueError, match="below its floor"):
        keep_for_average(12544, 1328, 3, 28)
    assert FastV().options() == {"layer": 2, "prune_ratio": 0.5, "budget": None}
    for bad in ({"layer": 0}, {"prune_ratio": 1.0}, {"budget": -1}, {"budget": 3, "prune_ratio": 0.5}):
        with pytest.raises(ValueError):
            FastV(**bad)
