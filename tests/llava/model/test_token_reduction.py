"""In-LLM token reduction (stages llm and decode) on a tiny random Qwen2, against hand-written loops.

Every reference below re-states the intended semantics directly with the decoder layer modules and
``model.model.rotary_emb``: layers < K on all real tokens, layers >= K on the kept ones with their
original position ids, plain causal masks written by hand. Each comparison is paired with a check
that the reduction changed the result, so a hook that silently does nothing fails.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface, DynamicCache, Qwen2Config, Qwen2ForCausalLM
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

from llava.model.token_reduction import CacheMasking, PromptPruning, TokenReducer, llm_reduction

FAKE_FLASH = "cpu_varlen"  # any implementation whose mask builder is flash attention's counts as flash
IMPLS = ("sdpa", "eager", FAKE_FLASH)
PREFIX, VISUAL = 3, 6  # text tokens before the visual span, visual tokens per row
NEG = torch.finfo(torch.float32).min


def _cpu_flash_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Flash attention's semantics on CPU: a 2D ``(B, K)`` padding mask (or ``None``), causal by position
    in the unpadded sequence, i.e. queries are the last ``Q`` of the ``K`` keys. The hand-written
    references below pass 4D additive masks, used as they are."""
    if attention_mask is not None and attention_mask.ndim == 4:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling)
    q_len, kv_len = query.shape[2], key.shape[2]
    allowed = torch.arange(kv_len)[None, :] <= torch.arange(q_len)[:, None] + (kv_len - q_len)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    bias = torch.where(allowed, 0.0, torch.finfo(query.dtype).min).expand(query.shape[0], q_len, kv_len)
    return eager_attention_forward(module, query, key, value, bias[:, None], scaling)


AttentionInterface.register(FAKE_FLASH, _cpu_flash_attention)
AttentionMaskInterface.register(FAKE_FLASH, flash_attention_mask)


def tiny_lm(impl: str, seed: int = 0, layers: int = 3) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=False,
    )
    config._attn_implementation = impl
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval()


def prompt(padding: str, seed: int = 1):
    """Random embeddings of rows of 3 text, 6 visual, then 3 text tokens (the second row of a padded
    batch: 1): one row (padding "none"), two of equal length ("equal"), or two padded on one side.

    Returns ``embeds (B, L, 32)``, ``mask (B, L)`` (``None`` without padding), ``position_ids (B, L)``
    (as ``generate`` makes them: counting real tokens), ``visual_spans``, and each row's real positions.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = {"none": [12], "equal": [12, 12]}.get(padding, [12, 10])
    width = max(lengths)
    embeds = torch.randn(len(lengths), width, 32, generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    spans, real = [], []
    for row, n in enumerate(lengths):
        start = width - n if padding == "left" else 0
        mask[row, start : start + n] = 1
        spans.append([(start + PREFIX, start + PREFIX + VISUAL)])
        real.append(torch.arange(start, start + n))
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return embeds, (None if padding in ("none", "equal") else mask), position_ids, spans, real


class KeepFixed(TokenReducer):
    """Keeps the given offsets inside each row's visual span; records what it saw."""

    stage = "llm"

    def __init__(self, layer: int = 1, offsets: tuple = ((0, 2, 5), (1,)), attention_layer: int | None = None):
        super().__init__()
        self.layer, self.offsets, self.attention_layer = layer, offsets, attention_layer
        self.llm_layer, self.llm_attention_layer = layer, attention_layer
        self.seen: list = []

    def select_in_llm(self, ctx):
        self.seen.append(ctx)
        return [torch.tensor(off) + spans[0][0] for off, spans in zip(self.offsets, ctx.visual_spans)]


class KeepAll(KeepFixed):
    def select_in_llm(self, ctx):
        self.seen.append(ctx)
        return [row.nonzero().flatten() for row in ctx.visual_mask]


def causal(n: int) -> torch.Tensor:
    return torch.full((n, n), NEG).triu(1)[None, None]


def run_layers(model, h, positions, layers, cache=None, mask=None):
    """Decoder layers on ``h (1, n, D)``; plain causal mask unless ``mask`` is given."""
    cos_sin = model.model.rotary_emb(h, positions)
    mask = causal(h.shape[1]) if mask is None else mask
    for layer in layers:
        h = layer(h, attention_mask=mask, position_embeddings=cos_sin, position_ids=positions, cache=cache,
                  use_cache=cache is not None)
    return h


def pruned_reference(model, embeds_row, positions_row, keep, k, cache=None) -> torch.Tensor:
    """Logits ``(V,)`` at the last token of one unpadded row, tokens ``keep`` (local indices) kept from layer k."""
    layers = model.model.layers
    h = run_layers(model, embeds_row[None], positions_row[None], layers[:k], cache)
    h = run_layers(model, h[:, keep], positions_row[None, keep], layers[k:], cache)
    return model.lm_head(model.model.norm(h))[0, -1]


def local_keep(row_len: int, offsets) -> torch.Tensor:
    """Indices, among a row's real tokens, of its text and of the kept visual offsets."""
    visual = set(range(PREFIX, PREFIX + VISUAL))
    kept = {PREFIX + o for o in offsets}
    return torch.tensor([i for i in range(row_len) if i not in visual or i in kept])


def no_hooks(model) -> bool:
    return all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in model.model.layers)


# ----------------------------------------------------------------------------- (c) prompt pruning


@pytest.mark.parametrize("padding", ["none", "left", "right"])
@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_keep_all_matches_plain_model_and_hooks_go_away(impl, padding):
    model = tiny_lm(impl)
    embeds, mask, positions, spans, real = prompt(padding)
    plain = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    reducer = KeepAll(layer=1)
    with llm_reduction(model, reducer, spans) as session:
        assert isinstance(session, PromptPruning) and not no_hooks(model)
        logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    assert len(reducer.seen) == 1 and logits.shape == plain.shape
    for row, pos in enumerate(real):
        torch.testing.assert_close(logits[row, pos], plain[row, pos], atol=1e-5, rtol=0)
    assert torch.equal(session.kept_positions, torch.arange(embeds.shape[1]).expand(embeds.shape[0], -1))
    assert no_hooks(model)
    after = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    assert torch.equal(after, plain)


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("padding", ["none", "equal", "left", "right"])
@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_pruned_prompt_matches_hand_written_layers(impl, padding, k):
    model = tiny_lm(impl)
    embeds, mask, positions, spans, real = prompt(padding)
    offsets = ((0, 2, 5), (1,))[: embeds.shape[0]]
    plain = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    with llm_reduction(model, KeepFixed(layer=k, offsets=offsets), spans) as session:
        logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    kept = session.kept_positions
    # rows drop 3 and 5 visual tokens and keep text and padding; the shorter row is left-filled
    assert logits.shape[1] == kept.shape[1] == embeds.shape[1] - 3
    assert (kept < 0).sum(1).tolist() == [0, 2][: embeds.shape[0]]
    for row, pos in enumerate(real):
        keep = local_keep(len(pos), offsets[row])
        pads = set(range(embeds.shape[1])) - set(pos.tolist())
        assert kept[row][kept[row] >= 0].tolist() == sorted(set(pos[keep].tolist()) | pads)
        expected = pruned_reference(model, embeds[row, pos], positions[row, pos], keep, k)
        slot = (kept[row] == pos[-1]).nonzero().item()
        torch.testing.assert_close(logits[row, slot], expected, atol=1e-5, rtol=0)
        assert (expected - plain[row, pos[-1]]).abs().max() > 1e-2  # the pruning mattered


@pytest.mark.parametrize("padding", ["equal", "left"])
@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_generate_matches_hand_rolled_greedy_loop_and_cache_lengths(impl, padding):
    model = tiny_lm(impl)
    embeds, mask, positions, spans, real = prompt(padding)
    k, steps, offsets = 1, 4, ((1,), (0, 2, 5))  # row 0 (unpadded when "left") gets the filler
    cache = DynamicCache(config=model.config)
    with llm_reduction(model, KeepFixed(layer=k, offsets=offsets), spans) as session:
        out = model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=steps, do_sample=False, cache=cache,
            return_dict_in_generate=True, output_logits=True, pad_token_id=0,
        )
    width = session.kept_positions.shape[1]
    assert [cache.get_seq_length(i) for i in range(3)] == [12 + steps - 1] + [width + steps - 1] * 2
    step_logits = torch.stack(out.logits, dim=1)  # (B, steps, V)
    for row, pos in enumerate(real):
        keep = local_keep(len(pos), offsets[row])
        ref_cache = DynamicCache(config=model.config)
        logits = [pruned_reference(model, embeds[row, pos], positions[row, pos], keep, k, ref_cache)]
        for step in range(1, steps):
            token = logits[-1].argmax()
            h = model.model.embed_tokens(token)[None, None]
            position = torch.tensor([[len(pos) - 1 + step]])
            h = run_layers(model, h, position, model.model.layers, ref_cache, mask=torch.zeros(1, 1, 1, 1))
            logits.append(model.lm_head(model.model.norm(h))[0, -1])
        torch.testing.assert_close(step_logits[row], torch.stack(logits), atol=1e-5, rtol=0)
        assert out.sequences[row].tolist() == torch.stack(logits).argmax(-1).tolist()
    plain = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                           return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    assert (torch.stack(plain.logits, dim=1) - step_logits).abs().max() > 1e-2
    assert no_hooks(model)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("attention_layer", [0, 1])
@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_context_attention_equals_eager_output_attentions(impl, attention_layer, padding):
    model = tiny_lm(impl)
    eager = tiny_lm("eager")
    embeds, mask, positions, spans, real = prompt(padding)
    reducer = KeepAll(layer=1, attention_layer=attention_layer)
    with llm_reduction(model, reducer, spans):
        model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    ctx = reducer.seen[0]
    last = torch.tensor([pos[-1].item() for pos in real])
    assert torch.equal(ctx.query_positions, last[:, None])
    assert torch.equal(ctx.valid, mask.bool()) and ctx.attention_layer == attention_layer
    assert ctx.hidden_states.shape == (2, 12, 32) and ctx.attention.shape == (2, 4, 1, 12)
    reference = eager(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                      output_attentions=True).attentions[attention_layer]
    torch.testing.assert_close(ctx.attention[:, :, 0], reference[torch.arange(2), :, last], atol=1e-5, rtol=0)
    assert ctx.attention[~ctx.valid[:, None, None, :].expand_as(ctx.attention)].abs().max() == 0


@torch.no_grad()
def test_selection_outside_visual_spans_is_rejected():
    model = tiny_lm("sdpa")
    embeds, mask, positions, spans, _ = prompt("none")
    reducer = KeepFixed(layer=1, offsets=((0, 7),))  # offset 7 leaves the 6-token span
    with pytest.raises(ValueError, match="KeepFixed.select_in_llm: row 0 keeps positions outside its visual spans"):
        with llm_reduction(model, reducer, spans):
            model(inputs_embeds=embeds, position_ids=positions)
    assert no_hooks(model)
    with pytest.raises(ValueError, match="sorted and unique"):
        with llm_reduction(model, KeepFixed(layer=1, offsets=((2, 0),)), spans):
            model(inputs_embeds=embeds, position_ids=positions)
    with pytest.raises(ValueError, match=r"llm_layer must be a decoder layer index in \[0, 3\), got 3"):
        with llm_reduction(model, KeepFixed(layer=3), spans):
            pass
    with pytest.raises(ValueError, match="visual_spans has 2 rows but the LLM input has 1"):
        with llm_reduction(model, KeepFixed(layer=1), spans * 2):
            model(inputs_embeds=embeds, position_ids=positions)


@pytest.mark.parametrize("stage", ["llm", "decode"])
@torch.no_grad()
def test_decoding_a_prompt_run_outside_the_context_fails(stage):
    model = tiny_lm("sdpa")
    embeds, _, positions, spans, _ = prompt("none")
    reducer = KeepFixed(layer=1, offsets=((0,),)) if stage == "llm" else DropFixed(layer=1)
    first = model(inputs_embeds=embeds, position_ids=positions, use_cache=True)
    with pytest.raises(RuntimeError, match="a decoding step on a cache whose prompt was not run in this context"):
        with llm_reduction(model, reducer, spans):
            model(inputs_embeds=embeds[:, :1], cache=first.cache, position_ids=positions[:, -1:] + 1)


class NotInLlm(TokenReducer):
    stage = "tokens"


@torch.no_grad()
def test_no_reducer_or_pre_llm_stage_installs_nothing():
    model = tiny_lm("sdpa")
    for reducer in (None, NotInLlm()):
        with llm_reduction(model, reducer, [[(3, 9)]]) as session:
            assert session is None and no_hooks(model)


# ----------------------------------------------------------------------------- (d) cache masking


class DropFixed(TokenReducer):
    """From the first decoding step on, hides the given visual offsets of every row; records contexts."""

    stage = "decode"

    def __init__(self, layer: int = 0, drop: tuple = (0, 1, 3, 4)):
        super().__init__()
        self.layer, self.drop = layer, drop
        self.llm_layer = layer
        self.seen: list = []

    def select_in_cache(self, ctx):
        self.seen.append(ctx)
        if ctx.step > 0:
            return None  # keep the first selection
        return [torch.tensor([o for o in range(VISUAL) if o not in self.drop]) + s[0][0] for s in ctx.visual_spans]


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_decode_masking_equals_masked_attention_from_first_step(impl, k):
    model = tiny_lm(impl)
    embeds, mask, positions, spans, real = prompt("left")
    steps, reducer = 4, DropFixed(layer=k)
    with llm_reduction(model, reducer, spans) as session:
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                             return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    assert isinstance(session, CacheMasking) and session.steps == steps - 1 and no_hooks(model)
    assert [ctx.step for ctx in reducer.seen] == [0, 1, 2] and [c.cache_length for c in reducer.seen] == [12, 13, 14]
    dropped = torch.zeros_like(mask, dtype=torch.bool)
    for row, s in enumerate(spans):
        dropped[row, [s[0][0] + o for o in reducer.drop]] = True
    assert torch.equal(session.keep, ~dropped)

    # reference: full prompt, then decoding steps whose layers >= k do not see the dropped positions
    ref = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, logits = ref.cache, [ref.logits[:, -1]]
    for step in range(1, steps):
        h = model.model.embed_tokens(logits[-1].argmax(-1))[:, None]
        position = positions[:, -1:] + step
        seen = torch.cat([mask.bool(), torch.ones(2, step, dtype=torch.bool)], dim=1)
        full = torch.where(seen, 0.0, NEG)[:, None, None]
        hidden_mask = torch.where(seen & ~torch.cat([dropped, torch.zeros(2, step, dtype=torch.bool)], 1), 0.0, NEG)
        cos_sin = model.model.rotary_emb(h, position)
        for i, layer in enumerate(model.model.layers):
            h = layer(h, attention_mask=full if i < k else hidden_mask[:, None, None], position_embeddings=cos_sin,
                      position_ids=position, cache=cache, use_cache=True)
        logits.append(model.lm_head(model.model.norm(h))[:, -1])
    torch.testing.assert_close(torch.stack(out.logits, 1), torch.stack(logits, 1), atol=1e-5, rtol=0)
    plain = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                           return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    assert (torch.stack(plain.logits, 1)[:, 1:] - torch.stack(logits, 1)[:, 1:]).abs().max() > 1e-2


@pytest.mark.parametrize("impl", IMPLS)
@torch.no_grad()
def test_decode_context_attention_equals_eager_output_attentions(impl):
    model, eager = tiny_lm(impl), tiny_lm("eager")
    embeds, mask, positions, spans, _ = prompt("left")
    reducer = DropFixed(layer=2, drop=())
    with llm_reduction(model, reducer, spans):
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=2, do_sample=False,
                             return_dict_in_generate=True, pad_token_id=0)
    ctx = reducer.seen[0]
    assert ctx.attention.shape == (2, 4, 1, 13) and ctx.hidden_states.shape == (2, 1, 32)
    first = eager(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
    step = eager(inputs_embeds=eager.model.embed_tokens(out.sequences[:, :1]), cache=first.cache,
                 attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1),
                 position_ids=positions[:, -1:] + 1, output_attentions=True)
    torch.testing.assert_close(ctx.attention, step.attentions[2], atol=1e-5, rtol=0)
    assert ctx.attention[:, :, 0, :2][1].abs().max() == 0  # row 1's two left pads
