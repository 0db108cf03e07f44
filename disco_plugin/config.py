"""``DiscoConfig``: every option of the DisCo resampler and its two training losses.

DisCo's own code was not public when this was written; the defaults follow the first author's
prototype (``ZJHTerry18/STEP``, ``MultiModalLLM_fg_PT_2``), and every choice the public record leaves
open is a field here (the package README lists which are reconstructed).

Presets (``PRESETS``):

* ``"prototype"``: 96 queries (64 local in 16 groups of 4, 32 global), a 768-wide bridge, VCD with
  negatives from the same video only, TFC on every token: the prototype's main configuration.
* ``"tiny"``: the same layout at toy scale (12 queries: 4 groups of 2, 4 global; a 32-wide bridge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llava.plugin import OptionsMixin, check_int

VCD_NEGATIVES = ("video", "batch")
TFC_TOKENS = ("all", "matched")
ATTENTION_SCOPES = ("clip", "frame")


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int("DiscoConfig", name, value, minimum)


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"DiscoConfig.{name}={value!r}; expected a number > 0")


@dataclass(frozen=True)
class DiscoConfig(OptionsMixin):
    """Options of :class:`disco_plugin.resampler.DiscoResampler` and its losses.

    Attributes:
        num_queries: K, the learnable queries; every item (image or video, any T/H/W) gives exactly K
            LLM tokens.
        num_groups: G, the groups of consecutive *local* queries VCD pairs with instances; an item is
            paired with at most G instances.
        group_size: queries per group; the first ``num_groups * group_size`` queries are local, the
            rest global (no pairing loss).
        hidden_size: width of the queries and the bridge layers (the prototype's Q-Former: 768).
        depth: bridge layers, each self-attention over the queries, cross-attention to the video
            patches, MLP (pre-norm).
        num_heads: attention heads of both attentions.
        mlp_ratio: MLP width of the bridge layers over ``hidden_size``.
        attention_scope: ``"clip"``: one softmax over all ``T*H*W`` patches of the item (prototype);
            ``"frame"``: a softmax per frame, the frames' outputs averaged (each frame weighs ``1/T``).
            Either way each token's per-frame attention map is observable.
        readout_depth: layers of the MLP to the LLM width (1: the prototype's single Linear).
        embed_dim: width of the VCD space (``v_proj`` / ``t_proj``).
        vcd: build the VCD heads and the instance encoder (SigLIP's text tower, frozen).
        tfc: compute the TFC loss.
        vcd_temperature, tfc_temperature: initial values of the two learnable temperatures (0.07).
        vcd_negatives: ``"video"``: only the other instances of the same item are negatives
            (prototype); ``"batch"``: the instances of every item of the micro-batch are.
        tfc_tokens: ``"all"``: every query's per-frame focus enters the loss (prototype);
            ``"matched"``: only the queries of groups matched to an instance.
        fill_single_instance: an item with exactly one instance is paired with it plus these
            phrases (prototype: "foreground", "background"); empty: no filling.
        truncate_instances: items with more than G instances keep their first G (prototype) instead
            of being refused when the record is read.
    """

    num_queries: int = 96
    num_groups: int = 16
    group_size: int = 4
    hidden_size: int = 768
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    attention_scope: str = "clip"
    readout_depth: int = 1
    embed_dim: int = 256
    vcd: bool = True
    tfc: bool = True
    vcd_temperature: float = 0.07
    tfc_temperature: float = 0.07
    vcd_negatives: str = "video"
    tfc_tokens: str = "all"
    fill_single_instance: tuple[str, ...] = ("foreground", "background")
    truncate_instances: bool = False

    def __post_init__(self) -> None:
        for name, minimum in (("num_queries", 1), ("num_groups", 0), ("group_size", 1), ("hidden_size", 1),
                              ("depth", 1), ("num_heads", 1), ("readout_depth", 1), ("embed_dim", 1)):
            _check_int(name, getattr(self, name), minimum)
        for name in ("mlp_ratio", "vcd_temperature", "tfc_temperature"):
            _check_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"DiscoConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.num_local > self.num_queries:
            raise ValueError(f"DiscoConfig: num_groups*group_size={self.num_local} local queries exceed "
                             f"num_queries={self.num_queries}")
        if self.vcd and self.num_groups < 1:
            raise ValueError("DiscoConfig: vcd=True needs num_groups >= 1 (the groups VCD pairs with instances)")
        for name, allowed in (("attention_scope", ATTENTION_SCOPES), ("vcd_negatives", VCD_NEGATIVES),
                              ("tfc_tokens", TFC_TOKENS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DiscoConfig.{name}={getattr(self, name)!r}; allowed values: {', '.join(allowed)}")
        for name in ("vcd", "tfc", "truncate_instances"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DiscoConfig.{name}={getattr(self, name)!r}; expected True or False")
        fill = self.fill_single_instance
        if isinstance(fill, list):
            fill = tuple(fill)
            object.__setattr__(self, "fill_single_instance", fill)
        if not isinstance(fill, tuple) or not all(isinstance(p, str) and p.strip() for p in fill):
            raise ValueError(f"DiscoConfig.fill_single_instance={self.fill_single_instance!r}; expected a list of "
                             "non-empty phrases")
        if self.tfc and self.tfc_tokens == "matched" and not self.vcd:
            raise ValueError("DiscoConfig: tfc_tokens='matched' needs vcd=True (the matching decides the tokens)")

    @property
    def num_local(self) -> int:
        return self.num_groups * self.group_size

    @property
    def max_instances(self) -> int:
        """Instances an item may name (one group each)."""
        return self.num_groups


PRESETS: dict[str, DiscoConfig] = {
    "prototype": DiscoConfig(),
    "tiny": DiscoConfig(num_queries=12, num_groups=4, group_size=2, hidden_size=32, depth=2, num_heads=2,
                        embed_dim=16),
}


def resolve_disco_config(preset: str | None = None, **overrides: Any) -> DiscoConfig:
    """A preset (default ``"prototype"``) with some fields changed."""
    name = preset or "prototype"
    if name not in PRESETS:
        raise ValueError(f"unknown DisCo preset {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
