"""``BVLLMConfig``: every option of the B-VLLM projector, and its presets.

Two presets exist (``PRESETS``):

* ``"paper"``: the public code's arrangement (``zhuqiangLu/B-VLLM``, ``bvlm_arch.py``): two BERT-base
  Q-Formers with 32-query banks, 16 selector slots, Gumbel-softmax at τ = 0.5, the one-hop γ = 0.75
  slot merge, R = 32 spatial queries, the per-frame budget derived from θ = 576 as an upper bound
  (``budget_mode="upper_bound"``: 32·k′ tokens for k′ slots left after merging, content-dependent).
  Where the paper and the code disagree the paper's choice is the default and the code's is a field
  (``temporal_sort``); where we deviate from both it is a field too (``eval_gumbel_noise``,
  ``descriptor``) — see ``bvllm_plugin/README.md``.
* ``"tiny"``: the same mechanism at test size (hidden 32, 2 layers, banks of 8, 4 slots, R = 8, θ = 24).

``budget_mode="exact"`` gives every video exactly θ tokens: ``num_slots`` slots are all kept (no slot
is dropped by the temporal merge) and the ToMe merge brings each slot from R tokens down to its share
of θ (the first ``θ mod num_slots`` slots keep one token more). Images (and 1-frame videos) take the
T = 1 path: one slot of ``min(R, θ)`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llava.plugin import OptionsMixin, check_int

BUDGET_MODES = ("upper_bound", "exact")
DESCRIPTORS = ("mean", "first_token")


def _fail(name: str, value: Any, reason: str) -> None:
    raise ValueError(f"BVLLMConfig.{name}={value!r}: {reason}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int("BVLLMConfig", name, value, minimum)


@dataclass(frozen=True)
class BVLLMConfig(OptionsMixin):
    """Options of :class:`bvllm_plugin.projector.BVLLMProjector`. Defaults are the ``"paper"`` preset.

    Attributes:
        qformer_hidden_size, qformer_layers, qformer_heads, qformer_intermediate_size,
        cross_attention_frequency, qformer_dropout: shape of both Q-Formers (BERT-base: 768/12/12/3072,
            cross-attention in every 2nd layer, dropout 0.1).
        qformer_vision_width: width the Q-Formers cross-attend to; ``None`` = the vision tower's width.
            Otherwise an input adapter ``Linear(vision -> width)`` maps the patches and frame
            descriptors first (the code's ``vlm_att_bert_proj`` branch; 1408 reads InstructBLIP's
            EVA-width cross-attention weights).
        query_bank_size: learnable queries per Q-Former (InstructBLIP: 32).
        num_slots: selector slots, the first ``num_slots`` queries of the temporal bank (code: 16).
        spatial_queries: R, the spatial Q-Former's queries per kept slot (code: 32).
        gumbel_tau: Gumbel-softmax temperature (code: 0.5; the paper's text anneals toward 0.1).
        gumbel_tau_final, tau_anneal_steps: τ decays linearly from ``gumbel_tau`` to
            ``gumbel_tau_final`` over ``tau_anneal_steps`` training forwards (0: constant τ).
        eval_gumbel_noise: sample Gumbel noise in eval mode too (the public code does); off by
            default, so eval is a deterministic softmax of the scores at τ.
        descriptor: the per-frame descriptor the selector scores: ``"mean"`` (mean patch; SigLIP has
            no CLS token) or ``"first_token"`` (the code's CLS arrangement: the first token of the
            grid is the descriptor and is removed from the patches — for a tower whose first token is a
            CLS token).
        merge_threshold: γ of the one-hop slot merge (code: 0.75); a slot whose most similar earlier
            slot has (cos + 1) / 2 > γ is averaged into it.
        temporal_sort: order the kept slots by the frame each one weighs most (the paper); ``False``
            keeps slot order (the code).
        budget: θ, the visual-token budget per item (code: 576).
        budget_mode: ``"upper_bound"`` (the code: per-frame budget ``int((θ // R) / k′ · R)``, so
            R·k′ tokens at the defaults) or ``"exact"`` (module docstring).
        max_text_tokens: Q-Former text length (left-truncated, as the code).
    """

    qformer_hidden_size: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    qformer_dropout: float = 0.1
    qformer_vision_width: int | None = None
    query_bank_size: int = 32
    num_slots: int = 16
    spatial_queries: int = 32
    gumbel_tau: float = 0.5
    gumbel_tau_final: float | None = None
    tau_anneal_steps: int = 0
    eval_gumbel_noise: bool = False
    descriptor: str = "mean"
    merge_threshold: float = 0.75
    temporal_sort: bool = True
    budget: int = 576
    budget_mode: str = "upper_bound"
    max_text_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("qformer_hidden_size", "qformer_layers", "qformer_heads", "qformer_intermediate_size",
                     "cross_attention_frequency", "query_bank_size", "num_slots", "spatial_queries", "budget",
                     "max_text_tokens"):
            _check_int(name, getattr(self, name), 1)
        _check_int("tau_anneal_steps", self.tau_anneal_steps, 0)
        if self.qformer_hidden_size % self.qformer_heads:
            _fail("qformer_heads", self.qformer_heads, f"must divide qformer_hidden_size={self.qformer_hidden_size}")
        if self.qformer_vision_width is not None:
            _check_int("qformer_vision_width", self.qformer_vision_width, 1)
        if self.num_slots > self.query_bank_size:
            _fail("num_slots", self.num_slots, f"the selector uses the first num_slots of its "
                  f"query_bank_size={self.query_bank_size} queries")
        if self.spatial_queries > self.query_bank_size:
            _fail("spatial_queries", self.spatial_queries, f"more than query_bank_size={self.query_bank_size}")
        if not 0.0 <= self.qformer_dropout < 1.0:
            _fail("qformer_dropout", self.qformer_dropout, "expected a probability in [0, 1)")
        if not (isinstance(self.gumbel_tau, (int, float)) and self.gumbel_tau > 0):
            _fail("gumbel_tau", self.gumbel_tau, "expected a positive temperature")
        if self.gumbel_tau_final is not None and not self.gumbel_tau_final > 0:
            _fail("gumbel_tau_final", self.gumbel_tau_final, "expected a positive temperature")
        if not (isinstance(self.merge_threshold, (int, float)) and 0.0 <= self.merge_threshold <= 1.0):
            _fail("merge_threshold", self.merge_threshold, "γ compares (cos + 1) / 2, so it must lie in [0, 1]")
        if self.descriptor not in DESCRIPTORS:
            _fail("descriptor", self.descriptor, f"allowed values: {', '.join(DESCRIPTORS)}")
        if self.budget_mode not in BUDGET_MODES:
            _fail("budget_mode", self.budget_mode, f"allowed values: {', '.join(BUDGET_MODES)}")
        if self.budget_mode == "upper_bound" and self.budget < self.spatial_queries:
            _fail("budget", self.budget, f"smaller than one frame's R={self.spatial_queries} tokens")
        if self.budget_mode == "exact":
            if self.budget > self.num_slots * self.spatial_queries:
                _fail("budget", self.budget, f"exact mode gives at most num_slots x R = {self.num_slots} x "
                      f"{self.spatial_queries} = {self.num_slots * self.spatial_queries} tokens; raise num_slots "
                      f"to >= {math.ceil(self.budget / self.spatial_queries)}")
            if self.budget < self.num_slots:
                _fail("budget", self.budget, f"exact mode needs at least one token per slot (num_slots={self.num_slots})")

    # ------------------------------------------------------------------ budgets

    def frame_budget(self, kept_slots: int) -> int:
        """Upper-bound mode: the code's per-frame budget ``int(max(1, (θ // R) / k′ · R))``."""
        return int(max(1, (self.budget // self.spatial_queries) / kept_slots * self.spatial_queries))

    def slot_tokens(self, kept_slots: int, single_frame: bool) -> list[int]:
        """Tokens each of ``kept_slots`` slots keeps after the spatial merge, in slot order."""
        if single_frame:
            return [min(self.spatial_queries, self.budget)]
        if self.budget_mode == "upper_bound":
            return [min(self.spatial_queries, self.frame_budget(kept_slots))] * kept_slots
        share, extra = divmod(self.budget, kept_slots)
        return [share + 1] * extra + [share] * (kept_slots - extra)

    def num_output_tokens(self, t: int) -> int:
        """Exact for images, 1-frame items and ``budget_mode="exact"``; otherwise the largest count over
        every possible number of kept slots (the count of one video depends on its content)."""
        if t < 1:
            raise ValueError(f"B-VLLM: an item needs at least one frame, got t={t}")
        if t == 1:
            return sum(self.slot_tokens(1, True))
        if self.budget_mode == "exact":
            return self.budget
        return max(sum(self.slot_tokens(k, False)) for k in range(1, self.num_slots + 1))

    def token_count_range(self, t: int) -> tuple[int, int]:
        """``(fewest, most)`` tokens an item of ``t`` frames can become."""
        if t == 1 or self.budget_mode == "exact":
            count = self.num_output_tokens(t)
            return count, count
        counts = [sum(self.slot_tokens(k, False)) for k in range(1, self.num_slots + 1)]
        return min(counts), max(counts)

    def tau_at(self, step: int) -> float:
        """Gumbel temperature after ``step`` training forwards."""
        if not self.tau_anneal_steps or self.gumbel_tau_final is None:
            return float(self.gumbel_tau)
        progress = min(1.0, step / self.tau_anneal_steps)
        return float(self.gumbel_tau + (self.gumbel_tau_final - self.gumbel_tau) * progress)


PRESETS: dict[str, BVLLMConfig] = {
    "paper": BVLLMConfig(),
    "tiny": BVLLMConfig(qformer_hidden_size=32, qformer_layers=2, qformer_heads=2, qformer_intermediate_size=37,
                        query_bank_size=8, num_slots=4, spatial_queries=8, budget=24),
}


def resolve_preset(name: str) -> BVLLMConfig:
    if name not in PRESETS:
        raise ValueError(f"bvllm_preset={name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


__all__ = ["BUDGET_MODES", "DESCRIPTORS", "PRESETS", "BVLLMConfig", "resolve_preset"]
