"""DyCoke's decode-time KV selection: step by step against a re-statement of ``PrunableDynamicCache``'s
``dycoke_pruning`` / ``update_cache``, and inside ``generate`` on a tiny Qwen2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llava.model.token_reduction import DecodeContext, llm_reduction
from reducers_plugin.dycoke import DyCokeKV

START, IMAGE, LENGTH = 2, 8, 12


def _context(step: int, attention: torch.Tensor, keep: torch.Tensor) -> DecodeContext:
    visual = torch.zeros(1, LENGTH, dtype=torch.bool)
    visual[0, START : START + IMAGE] = True
    return DecodeContext(layer=1, step=step, hidden_states=torch.zeros(1, 1, 4), attention_layer=0,
                         attention=attention, cache_length=LENGTH + step, keep=keep, valid=torch.ones_like(visual),
                         visual_mask=visual, visual_spans=[[(START, START + IMAGE)]])


def _original_steps(attentions: list[torch.Tensor], prune: float) -> list[set | None]:
    """Per step, the image positions layers >= l attend to (``None``: the whole cache), as the original."""
    previous, out = None, []
    for attention in attentions:
        image = attention.mean(1)[0, -1][START : START + IMAGE]
        similarity = 0 if previous is None else F.cosine_similarity(image, previous, dim=0)
        previous = image
        if similarity < 0.9:
            out.append(set((torch.topk(image, int(IMAGE * (1 - prune)), sorted=False)[1] + START).tolist()))
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("prune", [0.5, 0.8])
def test_dycoke_kv_selects_like_the_original_step_by_step(prune):
    gen = torch.Generator().manual_seed(0)
    first = (3 * torch.randn(1, 2, 1, LENGTH + 1, generator=gen)).softmax(-1)
    changed = (3 * torch.randn(1, 2, 1, LENGTH + 3, generator=gen)).softmax(-1)
    # step 1 repeats step 0's pattern (similarity 1): the original attends to the whole cache there
    attentions = [first, torch.cat([first, torch.full((1, 2, 1, 1), 0.01)], -1), changed]
    expected = _original_steps(attentions, prune)
    assert expected[1] is None and expected[0] is not None and expected[2] is not None
    reducer, keep = DyCokeKV(layer=1, prune_ratio=prune), torch.ones(1, LENGTH, dtype=torch.bool)
    for step, (attention, want) in enumerate(zip(attentions, expected)):
        kept = reducer.select_in_cache(_context(step, attention, keep))
        want = set(range(START, START + IMAGE)) if want is None else want
        assert set(kept[0].tolist()) == want and kept[0].tolist() == sorted(want)
    # the paper's reading: an unchanged step keeps the last selection
    previous = DyCokeKV(layer=1, prune_ratio=prune, unchanged="previous")
    assert previous.select_in_cache(_context(0, attentions[0], keep)) is not None
    assert previous.select_in_cache(_context(1, attentions[1], keep)) is None


@torch.no_grad()
def test_dycoke_kv_in_generate_masks_only_while_decoding(models):
    model, _ = models
    embeds = torch.randn(1, LENGTH, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    kwargs = dict(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, pad_token_id=0,
                  output_logits=True, return_dict_in_generate=True)
    plain = model.generate(**kwargs)
    with llm_reduction(model, DyCokeKV(layer=2, prune_ratio=0.75), [[(START, START + IMAGE)]]) as session:
        pruned = model.generate(**kwargs)
    # the prompt forward is untouched: the first token's logits are the plain model's
    torch.testing.assert_close(pruned.logits[0], plain.logits[0], atol=1e-5, rtol=0)
    assert session.steps == 3 and int(session.keep[0, START : START + IMAGE].sum()) in (2, IMAGE)
    assert (torch.stack(pruned.logits[1:]) - torch.stack(plain.logits[1:])).abs().max() > 1e-4
