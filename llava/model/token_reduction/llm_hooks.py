"""Hook points (c) and (d): visual-token reduction inside the language model, without forking it.

:func:`llm_reduction` installs ``register_forward_pre_hook(..., with_kwargs=True)`` hooks on the decoder
layers of a transformers decoder with the Qwen2/LLaMA layout (``language_model.model.layers``) for one
forward or ``generate`` call, and removes them on exit. With no reducer, or one of stage ``features`` /
``tokens``, it installs nothing.

Stage ``llm`` (c), physical pruning from layer K during the prompt forward:

* layers ``< K`` run on the full sequence; their cache holds all L prompt positions;
* at the input of layer K the reducer receives a :class:`LayerContext` and returns the visual positions
  to keep; text and padding are always kept;
* from layer K on, the hidden states, ``position_ids``, the RoPE ``position_embeddings`` and the
  attention mask are gathered to the kept positions, so kept tokens keep their ORIGINAL positions
  (as FastV does) and layers ``>= K`` cache only them;
* rows that keep different numbers of tokens are left-filled to the longest with filler slots that
  attend only to themselves and that no token attends to; every row's last position stays last (what
  ``generate`` reads). The outputs (logits, last hidden state) therefore have ``L' = max kept`` positions;
  :attr:`PromptPruning.kept_positions` maps each output slot back to its original position;
* while decoding, the mask the model builds for ``L + t`` keys gets its key columns gathered to (kept
  prompt positions, decoded tokens) in layers ``>= K``. New tokens take their positions from the full
  2D attention mask / the full-length cache of layer 0, so they continue the original numbering.

Stage ``decode`` (d), masking, not pruning: at every decoding step, at the input of layer K, the reducer
receives a :class:`DecodeContext` (the new token's attention over the whole cache) and may return the
prompt's visual positions to keep; layers ``>= K`` of that step and of later steps (until the next
selection) do not attend to the others. The cache keeps every position (no memory saved); only the
attention mask changes.

The mask a layer receives may be ``None`` (SDPA's ``is_causal`` path), a 4D bool (SDPA) or additive float
(eager) ``(B, 1, Q, K)`` mask, or a 2D ``(B, K)`` padding mask (flash attention); all are handled, and
``None`` stays ``None`` whenever the reduced attention is still plain causal. The reducers' attention
rows are recomputed from the scoring layer's own ``q_proj``/``k_proj`` and RoPE, so every layer keeps
its fast kernel.

Requirements: a ``DynamicCache`` (the default); decoding keeps the prompt's rows in their order (greedy
or sampling; not beam search, which reorders them); no ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, flash_attention_mask, sdpa_mask

from .base import LLM_STAGES, DecodeContext, LayerContext, TokenReducer

Spans = list[list[tuple[int, int]]]


@contextmanager
def llm_reduction(
    language_model: nn.Module, reducer: TokenReducer | None, visual_spans: Spans
) -> Iterator[PromptPruning | CacheMasking | None]:
    """Reduces visual tokens inside ``language_model`` for the forward / ``generate`` calls in the block.

    Args:
        language_model: a decoder LM with ``.model.layers`` (``Qwen2ForCausalLM`` or a LLaVA subclass).
        reducer: the reducer; ``None`` or a reducer of stage ``features`` / ``tokens`` installs nothing.
        visual_spans: per row of the LLM input (padded, as fed to the LLM), half-open ``(start, end)``
            positions of its visual tokens.

    Yields:
        ``None`` when nothing is installed, else the session: :class:`PromptPruning` (stage ``llm``) or
        :class:`CacheMasking` (stage ``decode``), whose attributes report what was kept.
    """
    if reducer is None or reducer.stage not in LLM_STAGES:
        yield None
        return
    session = (PromptPruning if reducer.stage == "llm" else CacheMasking)(language_model, reducer, visual_spans)
    handles = session.install()
    try:
        yield session
    finally:
        for handle in handles:
            handle.remove()
        session.release()


class _Session:
    """Hooks shared by both stages: checks, per-forward memo of substituted layer arguments."""

    def __init__(self, language_model: nn.Module, reducer: TokenReducer, visual_spans: Spans):
        layers = getattr(getattr(language_model, "model", None), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(
                f"llm_reduction needs a decoder LM with .model.layers (e.g. Qwen2ForCausalLM), got "
                f"{type(language_model).__name__}"
            )
        name = type(reducer).__name__
        k = reducer.llm_layer
        if not isinstance(k, int) or not 0 <= k < len(layers):
            raise ValueError(f"{name}.llm_layer must be a decoder layer index in [0, {len(layers)}), got {k!r}")
        a = k if reducer.llm_attention_layer is None else reducer.llm_attention_layer
        if not isinstance(a, int) or not 0 <= a <= k:
            raise ValueError(f"{name}.llm_attention_layer must be in [0, llm_layer={k}], got {a!r}")
        impl = language_model.config._attn_implementation
        # the implementation's mask builder says which mask form its layers receive
        mask_builder = ALL_MASK_ATTENTION_FUNCTIONS.get(impl)
        if mask_builder not in (sdpa_mask, eager_mask, flash_attention_mask):
            raise ValueError(
                f"llm_reduction supports attention implementations with sdpa, eager or flash-attention masks, "
                f"not {impl!r}"
            )
        _check_attention_layout(layers[a])
        self.layers, self.reducer, self.name = layers, reducer, name
        self.k, self.a = k, a
        self.eager, self.flash = mask_builder is eager_mask, mask_builder is flash_attention_mask
        self.visual_spans = _check_spans(visual_spans)
        self._memo: dict[tuple[str, int], tuple[object, object]] = {}
        self._scores: torch.Tensor | None = None  # attention rows from layer a, consumed at layer k
        self._cache, self._batch = None, 0  # the prompt's cache and rows, checked at every decoding step

    def install(self) -> list[torch.utils.hooks.RemovableHandle]:
        hooked = sorted({self.a, *range(self.k, len(self.layers))})
        handles = [
            self.layers[i].register_forward_pre_hook(partial(self._pre_hook, i), with_kwargs=True) for i in hooked
        ]
        handles.append(self.layers[-1].register_forward_hook(self._end_of_forward))
        return handles

    def release(self) -> None:
        self._memo.clear()
        self._scores = self._cache = None

    def _end_of_forward(self, module, args, output) -> None:
        self._memo.clear()
        self._scores = None

    def _pre_hook(self, i: int, module: nn.Module, args: tuple, kwargs: dict):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        hidden = self.on_layer(i, hidden, kwargs, cache)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def on_layer(self, i: int, hidden: torch.Tensor, kwargs: dict, cache) -> torch.Tensor:
        raise NotImplementedError

    def _swap(self, kwargs: dict, key: str, transform: Callable) -> None:
        """Replaces ``kwargs[key]`` by ``transform(kwargs[key])``, computed once per forward per object."""
        value = kwargs.get(key)
        if value is None and key != "attention_mask":
            return
        hit = self._memo.get((key, id(value)))
        if hit is None or hit[0] is not value:
            hit = (value, transform(value))
            self._memo[(key, id(value))] = hit
        kwargs[key] = hit[1]

    def _prompt_masks(self, hidden: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``(valid, visual_mask)``, each ``(B, L)`` bool, for the prompt entering a layer."""
        batch, length = hidden.shape[:2]
        if isinstance(mask, torch.Tensor) and mask.shape[-1] != length:
            raise ValueError(
                f"{self.name}: the prompt forward must start on an empty cache (mask covers {mask.shape[-1]} "
                f"keys for {length} tokens)"
            )
        if len(self.visual_spans) != batch:
            raise ValueError(f"visual_spans has {len(self.visual_spans)} rows but the LLM input has {batch}")
        visual = torch.zeros(batch, length, dtype=torch.bool)
        for row, spans in enumerate(self.visual_spans):
            for start, end in spans:
                if not 0 <= start < end <= length:
                    raise ValueError(f"visual_spans[{row}] has span ({start}, {end}) outside [0, {length})")
                visual[row, start:end] = True
        return _valid_positions(mask, batch, length, hidden.device), visual.to(hidden.device)

    def _check_decode(self, cache, hidden: torch.Tensor) -> None:
        if cache is not self._cache:
            raise RuntimeError(f"{self.name}: a decoding step on a cache whose prompt was not run in this context")
        if hidden.shape[0] != self._batch:
            raise RuntimeError(f"{self.name}: decoding {hidden.shape[0]} rows after a prompt of {self._batch}")

    def _encode(self, allowed: torch.Tensor, like, dtype: torch.dtype) -> torch.Tensor:
        """``(B, Q, K)`` bool -> the 4D mask form the layer expects (bool, or additive like ``like``)."""
        allowed = allowed[:, None]
        if not (like.is_floating_point() if like is not None else self.eager):
            return allowed
        dtype = like.dtype if like is not None else dtype
        return torch.where(allowed, torch.zeros((), dtype=dtype, device=allowed.device), torch.finfo(dtype).min)


class PromptPruning(_Session):
    """Stage ``llm``: drops visual tokens from layer K on (see the module docstring).

    Attributes:
        kept_positions: ``(B, L')`` original position of each slot of the reduced sequence (the
            positions of the model's outputs), ``-1`` at filler slots; ``None`` before the prompt ran.
    """

    def __init__(self, language_model: nn.Module, reducer: TokenReducer, visual_spans: Spans):
        super().__init__(language_model, reducer, visual_spans)
        self.kept_positions: torch.Tensor | None = None
        self._prompt: dict | None = None  # valid, visual, queries of the prompt in flight

    def on_layer(self, i: int, hidden: torch.Tensor, kwargs: dict, cache) -> torch.Tensor:
        if i == self.k:
            self._memo.clear()
        if cache is not None and cache.get_seq_length(i) > 0:  # a decoding step
            if i >= self.k:
                self._check_decode(cache, hidden)
                past = cache.get_seq_length(i)  # L' + steps so far, this layer not yet updated
                decode_mask = partial(self._decode_mask, queries=hidden.shape[1], past=past, dtype=hidden.dtype)
                self._swap(kwargs, "attention_mask", decode_mask)
            return hidden
        if i == self.a:
            self._scores = self._prompt_attention(i, hidden, kwargs)
        if i < self.k:
            return hidden
        if i == self.k:
            self._select(hidden, kwargs, cache)
            hidden = hidden.gather(1, self._index[..., None].expand(-1, -1, hidden.shape[-1]))
        self._swap(kwargs, "attention_mask", partial(self._prompt_mask, dtype=hidden.dtype))
        self._swap(kwargs, "position_ids", lambda ids: ids.expand(self._index.shape[0], -1).gather(1, self._index))
        self._swap(kwargs, "position_embeddings", lambda cos_sin: tuple(_gather_rows(t, self._index) for t in cos_sin))
        return hidden

    def _prompt_attention(self, i: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        mask = kwargs.get("attention_mask")
        valid, visual = self._prompt_masks(hidden, mask)
        queries = self.reducer.llm_query_positions(valid, visual)
        batch, length = valid.shape
        if queries.ndim != 2 or queries.shape[0] != batch or not 0 <= int(queries.min()) <= int(queries.max()) < length:
            raise ValueError(
                f"{self.name}.llm_query_positions must return (B={batch}, Lq) positions in [0, {length}), got "
                f"shape {tuple(queries.shape)}"
            )
        self._prompt = {"valid": valid, "visual": visual, "queries": queries}
        keys = torch.arange(length, device=hidden.device).expand(batch, -1)
        allowed = _allowed(mask, queries, keys, length, length)
        return _attention_rows(self.layers[i], hidden, kwargs["position_embeddings"], queries, allowed)

    def _select(self, hidden: torch.Tensor, kwargs: dict, cache) -> None:
        _check_dynamic(cache, self.name)
        prompt = self._prompt
        positions = kwargs["position_ids"].expand(hidden.shape[0], -1)
        ctx = LayerContext(
            layer=self.k, hidden_states=hidden, attention_layer=self.a, attention=self._scores,
            query_positions=prompt["queries"], valid=prompt["valid"], visual_mask=prompt["visual"],
            position_ids=positions, attention_mask=kwargs.get("attention_mask"), visual_spans=self.visual_spans,
        )
        keep = _keep_mask(self.reducer.select_in_llm(ctx), prompt["visual"], f"{self.name}.select_in_llm")
        self._index, self._real = _left_filled_slots(keep)
        self._batch, self._prompt_length = keep.shape
        self._cache = cache
        self._scores = self._prompt = None
        self.kept_positions = self._index.masked_fill(~self._real, -1)

    def _prompt_mask(self, mask, dtype: torch.dtype):
        index, real = self._index, self._real
        if self.flash:
            new = real if mask is None else mask.bool().gather(1, index) & real
            return None if bool(new.all()) else new
        if mask is None and bool(real.all()):
            return None  # kept positions are sorted: still plain causal
        length = self._prompt_length
        allowed = _allowed(mask, index, index, length, length) & real[:, None, :]
        # filler slots attend to themselves only, so no softmax row is empty
        eye = torch.eye(index.shape[1], dtype=torch.bool, device=index.device)
        allowed = torch.where(real[:, :, None], allowed, eye)
        return self._encode(allowed, mask, dtype)

    def _decode_mask(self, mask, queries: int, past: int, dtype: torch.dtype):
        index, real = self._index, self._real
        batch, kept = index.shape
        new_keys = past - kept + queries  # decoded tokens so far, this step's included
        total = self._prompt_length + new_keys
        if isinstance(mask, torch.Tensor) and mask.shape[-1] != total:
            raise RuntimeError(f"{self.name}: the decoding mask covers {mask.shape[-1]} keys, expected {total}")
        tail = torch.arange(self._prompt_length, total, device=index.device).expand(batch, -1)
        keys = torch.cat([index, tail], dim=1)
        real_keys = torch.cat([real, real.new_ones(batch, new_keys)], dim=1)
        if self.flash:
            new = real_keys if mask is None else mask.bool().gather(1, keys) & real_keys
            return None if bool(new.all()) else new
        if mask is None and bool(real.all()):
            return None  # queries see every cached key
        rows = torch.arange(queries, device=index.device).expand(batch, -1)
        allowed = _allowed(mask, rows, keys, queries, total) & real_keys[:, None, :]
        return self._encode(allowed, mask, dtype)


class CacheMasking(_Session):
    """Stage ``decode``: hides dropped prompt positions from layers ``>= K`` while decoding.

    Mask-only: the cache keeps every position; layers ``>= K`` get an attention mask without the
    dropped visual positions, from the step that selected them on.

    Attributes:
        keep: ``(B, L)`` bool, the prompt positions layers ``>= K`` currently attend to (``None``
            before the prompt ran).
        steps: decoding steps seen so far.
    """

    def __init__(self, language_model: nn.Module, reducer: TokenReducer, visual_spans: Spans):
        super().__init__(language_model, reducer, visual_spans)
        self.keep: torch.Tensor | None = None
        self.steps = 0

    def on_layer(self, i: int, hidden: torch.Tensor, kwargs: dict, cache) -> torch.Tensor:
        if cache is None:
            return hidden  # nothing is decoded without a cache
        past = cache.get_seq_length(i)
        mask = kwargs.get("attention_mask")
        if past == 0:
            if i == self.a:  # the prompt: remember its layout, keep everything
                _check_dynamic(cache, self.name)
                self._valid, self._visual = self._prompt_masks(hidden, mask)
                self.keep = torch.ones_like(self._valid)
                self._cache, self._batch, self.steps = cache, hidden.shape[0], 0
            return hidden
        self._check_decode(cache, hidden)
        if i == self.a:
            rows = torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)
            keys = torch.arange(past + hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)
            allowed = _allowed(mask, rows, keys, hidden.shape[1], past + hidden.shape[1])
            self._scores = _attention_rows(
                self.layers[i], hidden, kwargs["position_embeddings"], rows, allowed, cache.layers[i].keys
            )
        if i == self.k:
            self._memo.clear()
            ctx = DecodeContext(
                layer=self.k, step=self.steps, hidden_states=hidden, attention_layer=self.a,
                attention=self._scores, cache_length=past, keep=self.keep, valid=self._valid,
                visual_mask=self._visual, visual_spans=self.visual_spans,
            )
            kept = self.reducer.select_in_cache(ctx)
            if kept is not None:
                self.keep = _keep_mask(kept, self._visual, f"{self.name}.select_in_cache")
            self._scores = None
            self.steps += 1
        if i >= self.k:
            masked = partial(self._masked, queries=hidden.shape[1], total=past + hidden.shape[1], dtype=hidden.dtype)
            self._swap(kwargs, "attention_mask", masked)
        return hidden

    def _masked(self, mask, queries: int, total: int, dtype: torch.dtype):
        batch, length = self.keep.shape
        if isinstance(mask, torch.Tensor) and mask.shape[-1] != total:
            raise RuntimeError(f"{self.name}: the decoding mask covers {mask.shape[-1]} keys, expected {total}")
        keep_keys = torch.cat([self.keep, self.keep.new_ones(batch, total - length)], dim=1)
        if self.flash:
            new = keep_keys if mask is None else mask.bool() & keep_keys
            return None if bool(new.all()) else new
        if mask is None and bool(self.keep.all()):
            return None
        rows = torch.arange(queries, device=keep_keys.device).expand(batch, -1)
        keys = torch.arange(total, device=keep_keys.device).expand(batch, -1)
        allowed = _allowed(mask, rows, keys, queries, total) & keep_keys[:, None, :]
        return self._encode(allowed, mask, dtype)


# ----------------------------------------------------------------------------- helpers


def _check_spans(visual_spans) -> Spans:
    try:
        return [[(int(start), int(end)) for start, end in row] for row in visual_spans]
    except (TypeError, ValueError) as err:
        raise ValueError(f"visual_spans must be a list (rows) of lists of (start, end) pairs: {err}") from err


def _check_attention_layout(layer: nn.Module) -> None:
    """The attention recompute assumes the Qwen2/LLaMA layer layout; anything else fails here, loudly."""
    attn = getattr(layer, "self_attn", None)
    needed = ["input_layernorm"] if not hasattr(layer, "input_layernorm") else []
    needed += [f"self_attn.{n}" for n in ("q_proj", "k_proj", "head_dim", "scaling") if not hasattr(attn, n)]
    if needed:
        raise TypeError(f"llm_reduction: decoder layer {type(layer).__name__} lacks {', '.join(needed)}")
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        raise TypeError(f"llm_reduction: {type(attn).__name__} normalises q/k, which the attention recompute omits")


def _check_dynamic(cache, name: str) -> None:
    for layer in getattr(cache, "layers", ()):
        if not isinstance(layer, DynamicLayer) or layer.is_sliding:
            raise TypeError(f"{name}: llm_reduction needs a DynamicCache, got a {type(layer).__name__} layer")


def _valid_positions(mask, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """``(B, L)`` bool, False at padding, read from the mask of a prompt forward on an empty cache."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if mask.ndim == 2:
        return mask.bool().expand(batch, -1)
    # a padding key is visible to no query, a real one at least to itself
    return _as_bool(mask[:, 0].diagonal(dim1=-2, dim2=-1)).expand(batch, -1)


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _allowed(mask, rows: torch.Tensor, cols: torch.Tensor, q_total: int, kv_total: int) -> torch.Tensor:
    """Which keys each query may attend to: ``(B, R, C)`` bool for query rows ``rows`` ``(B, R)`` and key
    columns ``cols`` ``(B, C)`` of a layer mask over ``q_total`` queries and ``kv_total`` keys."""
    causal = cols[:, None, :] <= rows[:, :, None] + (kv_total - q_total)  # queries are the last q_total keys
    if mask is None:
        return causal
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 4):
        raise TypeError(f"llm_reduction: unsupported attention mask {type(mask).__name__}")
    if mask.ndim == 2:
        return causal & mask.bool().gather(1, cols)[:, None, :]
    full = _as_bool(mask[:, 0]).expand(rows.shape[0], -1, -1)
    batch = torch.arange(rows.shape[0], device=rows.device)[:, None, None]
    return full[batch, rows[:, :, None], cols[:, None, :]]


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(B or 1, L, C)`` -> ``(B, L', C)`` at ``index`` ``(B, L')``."""
    return x.expand(index.shape[0], -1, -1).gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on ``(B, heads, L, d)`` with ``cos``/``sin`` ``(B, L, d)`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def _attention_rows(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos_sin: tuple[torch.Tensor, torch.Tensor],
    queries: torch.Tensor,
    allowed: torch.Tensor,
    past_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention ``(B, H, R, P + L)`` of ``layer`` for the query positions ``queries`` ``(B, R)``.

    Args:
        hidden: ``(B, L, D)`` input of the layer (before its input norm).
        cos_sin: the layer's RoPE ``(cos, sin)``, each ``(B or 1, L, head_dim)``.
        allowed: ``(B, R, P + L)`` bool, the keys each query may see.
        past_keys: ``(B, H_kv, P, head_dim)`` cached (already rotated) keys, or ``None``.
    """
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    batch, length, _ = x.shape
    cos, sin = (t.expand(batch, -1, -1) for t in cos_sin)
    q = attn.q_proj(_gather_rows(x, queries)).view(batch, queries.shape[1], -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    q = _rotate(q, _gather_rows(cos, queries), _gather_rows(sin, queries))
    k = _rotate(k, cos, sin)
    if past_keys is not None:
        k = torch.cat([past_keys, k], dim=2)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query attention
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scaling
    return scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1)


def _keep_mask(kept, visual: torch.Tensor, where: str) -> torch.Tensor:
    """A reducer's per-row kept visual positions -> ``(B, L)`` bool keep mask (all non-visual kept)."""
    batch, length = visual.shape
    if not isinstance(kept, (list, tuple)) or len(kept) != batch:
        raise ValueError(f"{where} must return a list of {batch} LongTensors (one per row), got {type(kept).__name__}")
    keep = ~visual
    for row, index in enumerate(kept):
        if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.is_floating_point():
            raise ValueError(f"{where}: row {row} must be a 1-D integer tensor of positions, got {index!r}")
        index = index.to(device=visual.device, dtype=torch.long)
        if index.numel() and bool((index[1:] <= index[:-1]).any()):
            raise ValueError(f"{where}: row {row} positions must be sorted and unique")
        if index.numel() and not (0 <= int(index[0]) and int(index[-1]) < length and bool(visual[row, index].all())):
            raise ValueError(f"{where}: row {row} keeps positions outside its visual spans")
        keep[row, index] = True
    return keep


def _left_filled_slots(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` keep mask -> ``(index, real)``, each ``(B, L')``, ``L'`` the largest kept count.

    Row b's kept positions, in order, fill its last ``count_b`` slots; the filler slots before them
    point at position 0 and have ``real`` False.
    """
    counts = keep.sum(dim=1)
    width = int(counts.max())
    slot = keep.cumsum(dim=1) - 1 + (width - counts)[:, None]
    rows, cols = keep.nonzero(as_tuple=True)
    index = torch.zeros(keep.shape[0], width, dtype=torch.long, device=keep.device)
    real = torch.zeros(keep.shape[0], width, dtype=torch.bool, device=keep.device)
    index[rows, slot[rows, cols]] = cols
    real[rows, slot[rows, cols]] = True
    return index, real
