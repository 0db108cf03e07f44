"""The contract between the LLaVA core and a training-free visual-token reducer.

A reducer acts at exactly one of four points (its ``stage``) on the path
``frames -> vision tower -> projector -> spliced embeddings -> LLM -> decoding``:

========== ================================================ =====================================
stage      where                                            method the core calls
========== ================================================ =====================================
features   (a) on vision-tower features, before the         :meth:`TokenReducer.reduce_features`
           projector
tokens     (b) on each visual item's projected tokens,      :meth:`TokenReducer.reduce_tokens`
           before they are spliced into the prompt
llm        (c) inside the LLM, at the input of decoder      :meth:`TokenReducer.select_in_llm`
           layer ``llm_layer`` during the prompt forward
decode     (d) on the KV cache, at every decoding step      :meth:`TokenReducer.select_in_cache`
========== ================================================ =====================================

Stages (a) and (b) change how many visual tokens enter the LLM; :meth:`TokenReducer.num_output_tokens`
says how many, so budgets are counted the same way for every method. Stages (c) and (d) leave the LLM
input unchanged; :func:`llava.model.token_reduction.llm_reduction` installs their hooks for one forward
or ``generate`` call.

Options: a reducer declares its options as named parameters of ``__init__`` with defaults and stores
each under its own name (``self.keep = keep``); :meth:`TokenReducer.options` reads them back for
``config.json`` and results tables, and ``build_token_reducer`` rejects unknown or missing ones.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from llava.model.visual import VisualBatch

STAGES = ("features", "tokens", "llm", "decode")
LLM_STAGES = ("llm", "decode")


@dataclass
class LayerContext:
    """What a stage-``llm`` reducer sees at decoder layer ``layer`` during the prompt forward.

    B rows, L positions (the padded sequence as fed to the LLM), D hidden width, H query heads.

    Attributes:
        layer: K, the decoder layer whose input is being reduced.
        hidden_states: ``(B, L, D)`` input of layer K.
        attention_layer: the layer whose self-attention ``attention`` reproduces (``<= layer``).
        attention: ``(B, H, Lq, L)`` float32 softmax probabilities of the queries at
            ``query_positions`` over every key, recomputed from that layer's input with its own
            ``q_proj``/``k_proj`` and RoPE, under the causal and padding mask (masked keys get 0).
            Equal to eager attention's ``output_attentions`` rows, while the model itself keeps
            running SDPA or flash attention.
        query_positions: ``(B, Lq)`` positions of the queries (``TokenReducer.llm_query_positions``).
        valid: ``(B, L)`` bool, False at padding.
        visual_mask: ``(B, L)`` bool, True inside ``visual_spans``.
        position_ids: ``(B, L)`` RoPE positions of the tokens.
        attention_mask: the mask layer K received (``None``, a 4D ``(B, 1, L, L)`` bool/additive mask,
            or a 2D ``(B, L)`` flash-attention padding mask).
        visual_spans: per row, half-open ``(start, end)`` spans of visual tokens.
    """

    layer: int
    hidden_states: torch.Tensor
    attention_layer: int
    attention: torch.Tensor
    query_positions: torch.Tensor
    valid: torch.Tensor
    visual_mask: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    visual_spans: list[list[tuple[int, int]]]


@dataclass
class DecodeContext:
    """What a stage-``decode`` reducer sees at decoder layer ``layer`` of one decoding step.

    B rows, L prompt positions, P positions already cached before this step (prompt and earlier
    steps), Q new tokens of this step (1 in ordinary decoding), H query heads.

    Attributes:
        layer: K, the first decoder layer that stops attending to dropped positions.
        step: 0 for the first token fed back after the prompt, then 1, 2, ...
        hidden_states: ``(B, Q, D)`` input of layer K for the new tokens.
        attention_layer: the layer whose self-attention ``attention`` reproduces (``<= layer``).
        attention: ``(B, H, Q, P + Q)`` float32 probabilities of the new tokens over the whole cache
            and themselves at that layer, under the causal and padding mask but *not* under this
            reducer's own drops (dropped positions keep their would-be probability).
        cache_length: P.
        keep: ``(B, L)`` bool, the prompt positions layers ``>= K`` attended to in the previous step
            (all True before the first selection).
        valid: ``(B, L)`` bool, False at prompt padding.
        visual_mask: ``(B, L)`` bool, True inside ``visual_spans``.
        visual_spans: per row, half-open ``(start, end)`` spans of visual tokens in the prompt.
    """

    layer: int
    step: int
    hidden_states: torch.Tensor
    attention_layer: int
    attention: torch.Tensor
    cache_length: int
    keep: torch.Tensor
    valid: torch.Tensor
    visual_mask: torch.Tensor
    visual_spans: list[list[tuple[int, int]]]


class TokenReducer(nn.Module):
    """Base class of training-free visual-token reducers; subclasses set ``stage`` and override one hook.

    Register a subclass with ``@register_token_reducer("name")``; the core builds it from
    ``config.mm_token_reducer`` and ``config.mm_token_reducer_config`` via ``build_token_reducer``.
    """

    #: One of ``STAGES``: the single point where this reducer acts.
    stage: ClassVar[str]
    #: K for stages ``llm`` and ``decode``: the first decoder layer that sees the reduction.
    llm_layer: int | None = None
    #: The layer whose attention the context carries; ``None`` means ``llm_layer``. FastV scores with
    #: layer K-1 and prunes from layer K, i.e. ``llm_attention_layer = llm_layer - 1``.
    llm_attention_layer: int | None = None

    # ------------------------------------------------------------------ selection

    def attach(self, model: nn.Module) -> None:
        """Called when the reducer is selected on ``model`` (the ``LlavaMetaModel``). A reducer that reads
        the vision tower's internals (attention maps) installs its hooks here, and raises ``ValueError``
        naming what is missing when the tower cannot give them. Default: nothing."""

    def detach(self) -> None:
        """Called when another reducer, or none, replaces this one: removes what :meth:`attach` installed."""

    # ------------------------------------------------------------------ (a) and (b)

    def reduce_features(self, batch: VisualBatch) -> VisualBatch:
        """(a) Vision-tower features ``(sum_i T_i, H, W, D_vision)`` -> fewer frames or a smaller grid."""
        return batch

    def reduce_tokens(self, tokens: list[torch.Tensor], batch: VisualBatch) -> list[torch.Tensor]:
        """(b) Projected tokens of each item ``(L_i, D)`` -> ``(L'_i, D)``; ``batch`` gives layout and text."""
        return tokens

    def num_output_tokens(self, num_tokens_in: int, t: int, h: int, w: int, modality: str) -> int:
        """LLM-input visual tokens of one item after (a)/(b), given ``num_tokens_in`` without reduction.

        ``t, h, w`` are the item's frames and vision patch grid. Stages ``llm`` and ``decode`` leave the
        LLM input as it is; stages ``features`` and ``tokens`` must override this (registration checks).
        """
        return num_tokens_in

    # ------------------------------------------------------------------ (c)

    def llm_query_positions(self, valid: torch.Tensor, visual_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` masks -> ``(B, Lq)`` positions whose attention the ``LayerContext`` carries.

        Default: the last non-padding position of each row (FastV's last prompt token), ``Lq = 1``.
        """
        positions = torch.arange(valid.shape[1], device=valid.device)
        return torch.where(valid, positions, -1).amax(dim=1, keepdim=True)

    def select_in_llm(self, ctx: LayerContext) -> list[torch.Tensor]:
        """(c) Per row, a sorted 1-D LongTensor of the *visual* positions to keep from layer K on.

        Positions index ``ctx.hidden_states``' sequence and must lie inside that row's visual spans;
        text and padding are always kept. Kept tokens keep their original RoPE positions.
        """
        raise NotImplementedError(f"{type(self).__name__} (stage {self.stage!r}) does not implement select_in_llm")

    # ------------------------------------------------------------------ (d)

    def select_in_cache(self, ctx: DecodeContext) -> list[torch.Tensor] | None:
        """(d) Per row, a sorted 1-D LongTensor of the prompt's *visual* positions layers ``>= K`` attend to
        in this and later steps, or ``None`` to keep the previous selection."""
        raise NotImplementedError(
            f"{type(self).__name__} (stage {self.stage!r}) does not implement select_in_cache"
        )

    # ------------------------------------------------------------------ options

    @classmethod
    def option_names(cls) -> list[str]:
        """The named parameters of ``__init__``: the options this reducer takes."""
        params = inspect.signature(cls.__init__).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in params if p.name != "self" and p.kind in kinds]

    def options(self) -> dict:
        """Resolved options, JSON-able, for ``config.json`` and results tables."""
        missing = [name for name in self.option_names() if not hasattr(self, name)]
        if missing:
            raise AttributeError(
                f"{type(self).__name__} must store its options under their own names (missing "
                f"self.{', self.'.join(missing)}) or override options()"
            )
        return {name: getattr(self, name) for name in self.option_names()}
