"""A straightforward per-sample restatement of the public B-VLLM forward (``zhuqiangLu/B-VLLM``,
``bvlm/model/bvlm_arch.py`` ``vlm_attention`` and ``bvlm/model/merge.py``), written from reading it, for
the equivalence tests. It runs one item at a time with loops where the code loops, on the modules of a
``BVLLMProjector`` (same weights), and follows the code's budget (no exact mode)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def threshold_merge(rows: torch.Tensor, metric: torch.Tensor, threshold: float, sort: bool) -> torch.Tensor:
    """``threshold_soft_matching`` + ``merge_wavg`` on ``rows (K, ...)`` given the slot weights ``metric (K, T)``."""
    k = metric.shape[0]
    best, target = [0.0] * k, [0] * k
    for i in range(1, k):
        sims = [(float(F.cosine_similarity(metric[i], metric[j], dim=0)) + 1) / 2 for j in range(i)]
        best[i] = max(sims)
        target[i] = sims.index(best[i])
    sources = [i for i in range(k) if best[i] > threshold]
    kept = [i for i in range(k) if i not in sources]
    merged = []
    for l in kept:
        members = [l] + [i for i in sources if target[i] == l]
        merged.append(torch.stack([rows[m] for m in members]).mean(dim=0))
    if sort:
        frames = [int(metric[l].argmax()) for l in kept]
        merged = [merged[i] for i in sorted(range(len(kept)), key=lambda i: (frames[i], i))]
    return torch.stack(merged)


def tome_step(x: torch.Tensor, r: int) -> torch.Tensor:
    """``bipartite_soft_matching`` + ``merge_wavg`` for one slot's tokens ``x (n, C)``."""
    if r <= 0:
        return x
    unit = x / x.norm(dim=-1, keepdim=True)
    even, odd = list(range(0, x.shape[0], 2)), list(range(1, x.shape[0], 2))
    scores = unit[even] @ unit[odd].T
    best, partner = scores.max(dim=-1)
    ranked = best.argsort(descending=True).tolist()
    moved, stay = ranked[:r], ranked[r:]
    odd_rows = []
    for j in range(len(odd)):
        group = [x[odd[j]]] + [x[even[i]] for i in moved if int(partner[i]) == j]
        odd_rows.append(torch.stack(group).mean(dim=0))
    return torch.cat([torch.stack([x[even[i]] for i in stay]) if stay else x[:0], torch.stack(odd_rows)])


def multi_layer_merge(x: torch.Tensor, target: int) -> torch.Tensor:
    while x.shape[0] // 2 > target:
        x = tome_step(x, x.shape[0] // 2)
    return tome_step(x, x.shape[0] - target)


def reference_item(p, feats_thwd: torch.Tensor, text: str, noise: torch.Tensor | None = None) -> dict:
    """One item (``(T, H, W, D)`` features, its question) through the public code's path.

    ``noise``: the Gumbel noise of its slots ``(K, T)`` (``None``: none, the deterministic eval)."""
    cfg = p.bvllm
    ids, mask = p.text([text], feats_thwd.device)
    feats = feats_thwd.flatten(1, 2)
    t = feats.shape[0]
    if cfg.descriptor == "first_token":  # odd token count: CLS first
        cls, patches = feats[:, :1], feats[:, 1:]
    else:  # even token count: mean of all tokens, every token kept
        cls, patches = feats.mean(dim=1, keepdim=True), feats
    img_in = p.ln_vision(patches)
    k = cfg.num_slots
    queries = p.temporal_queries[:, :k]
    att = torch.cat([torch.ones(1, k, dtype=mask.dtype), mask], dim=1)
    r = cfg.spatial_queries
    if t > 1:
        cls_tokens = cls.reshape(1, t, -1)
        out = p.temporal_qformer(input_ids=ids, attention_mask=att, query_embeds=queries,
                                 encoder_hidden_states=cls_tokens, encoder_attention_mask=torch.ones(1, t, dtype=torch.long))
        selector = p.selector_proj(out.last_hidden_state[:, :k])
        scores = torch.einsum("bkc,btc->bkt", selector, cls_tokens)[0] / math.sqrt(cls_tokens.shape[-1])
        if noise is not None:
            scores = scores + noise
        weights = (scores / cfg.gumbel_tau).softmax(dim=-1)
        mixed = torch.einsum("kt,tnc->knc", weights, img_in)
        slots = threshold_merge(mixed, weights, cfg.merge_threshold, cfg.temporal_sort)
        max_t = cfg.budget // r
        per_frame = int(max(1, (max_t / slots.shape[0]) * r))
    else:
        weights = torch.ones(k, 1)
        slots = img_in  # the code's image branch: every slot is the one frame; their mean is it
        per_frame = r
    sampled = p.spatial_qformer(
        input_ids=ids.repeat(slots.shape[0], 1),
        attention_mask=torch.cat([torch.ones(slots.shape[0], r, dtype=mask.dtype), mask.repeat(slots.shape[0], 1)], 1),
        query_embeds=p.spatial_queries[:, :r].expand(slots.shape[0], -1, -1),
        encoder_hidden_states=slots).last_hidden_state[:, :r]
    merged = torch.stack([multi_layer_merge(s, per_frame) for s in sampled])
    tokens = p.out_proj(p.token_proj(merged)).flatten(0, 1)
    return {"weights": weights, "slots": slots, "sampled": merged, "tokens": tokens}
