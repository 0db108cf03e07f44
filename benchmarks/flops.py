"""P4: analytic FLOPs of the HICom compressor against SigLIP-so400m's vision forward, per video.

Only matrix products are counted, ``2 * m * n * k`` each (what ``torch.utils.flop_counter`` counts too;
softmax, norms, GELU and additions are a rounding error next to them). The compressor count follows
the code path: :func:`compressor_flops` with ``folded=True`` is the default compute of
``hicom_plugin`` and ``folded=False`` its textbook form; ``tests/benchmarks/test_flops.py`` checks both
against ``FlopCounterMode`` on the real modules.

    python -m benchmarks.run --only P4
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.common import Record, fraction
from hicom_plugin import PRESETS, HIComConfig, num_attention_heads
from hicom_plugin.position import split_channels


@dataclass(frozen=True)
class SiglipShape:
    """SigLIP-so400m/14 at 384 px (``google/siglip-so400m-patch14-384``)."""

    layers: int = 27
    width: int = 1152
    mlp: int = 4304
    heads: int = 16
    image: int = 384
    patch: int = 14
    channels: int = 3

    @property
    def grid(self) -> int:
        return self.image // self.patch  # 27

    @property
    def tokens(self) -> int:
        return self.grid ** 2  # 729


def mm(m: int, n: int, k: int) -> int:
    """FLOPs of an ``(m, k) @ (k, n)`` product."""
    return 2 * m * n * k


def siglip_vision_flops(frames: int, shape: SiglipShape = SiglipShape()) -> dict[str, int]:
    """The vision tower's forward over ``frames`` images: patch embedding and every encoder layer.

    The attention-pooling head is left out (the compressor reads layer -2 features); the release's
    guided mode also runs the head's MLP over every patch, which the ``"head_mlp"`` entry gives apart.
    """
    n, d = shape.tokens, shape.width
    per_frame = {
        "patch_embedding": mm(n, d, shape.channels * shape.patch ** 2),
        "qkvo_projections": shape.layers * 4 * mm(n, d, d),
        "attention": shape.layers * 2 * mm(n, n, d),
        "mlp": shape.layers * 2 * mm(n, shape.mlp, d),
    }
    out = {name: frames * value for name, value in per_frame.items()}
    out["total"] = sum(out.values())
    out["head_mlp"] = frames * 2 * mm(n, shape.mlp, d)
    return out


def _mlp(tokens: int, dims: list[int]) -> int:
    """Linear layers ``dims[0] -> dims[1] -> ...`` applied to ``tokens`` rows."""
    return sum(mm(tokens, d_out, d_in) for d_in, d_out in zip(dims, dims[1:]))


def _attention_unfolded(queries: int, keys: int, dim: int) -> int:
    """``MultiHeadAttention.forward``: project queries, keys, values, attend, project out."""
    return 2 * mm(queries, dim, dim) + 2 * mm(keys, dim, dim) + 2 * mm(queries, keys, dim)


def _injector(kind: str, queries: int, d: int, text_dim: int, text_len: int, cfg: HIComConfig,
              adapt_g: bool) -> int:
    """``GuideInjector`` on ``queries`` rows of one item."""
    if kind == "none":
        return 0
    conditions = text_len if kind == "fine" else 1
    flops = 0
    if text_dim != d or (kind == "direct" and cfg.direct_mlp):
        flops += _mlp(conditions, [text_dim, d, d])
    if adapt_g:
        flops += _mlp(conditions, [d, d, d])
    if kind == "coarse":
        flops += _mlp(1, [d, 2 * d, 2 * d])
    elif kind == "fine":
        flops += _attention_unfolded(queries, text_len, d)
    return flops


def local_flops(cfg: HIComConfig, frames: int, grid: int, d: int, text_dim: int, llm_dim: int,
                text_len: int) -> dict[str, int]:
    """Local branch of one video (``frames`` x ``grid`` x ``grid``)."""
    kt, kh, kw = cfg.local_kernel
    kt = cfg.temporal_kernel(frames)
    groups = math.ceil(frames / kt) * math.ceil(grid / kh) * math.ceil(grid / kw)
    members = kt * kh * kw
    taps = members if cfg.query_pool == "mean" else 8  # trilinear: 2 taps per axis
    out = {
        "pool": mm(groups, d, taps),
        "adapters": (mm(groups, d, d) if cfg.adapt_q else 0)
        + (cfg.adapt_k + cfg.adapt_v) * _mlp(groups * members, [d, d, d]),
        "injection": _injector(cfg.local_injection, groups, d, text_dim, text_len, cfg, cfg.adapt_g),
        "attention": 2 * mm(groups, members, d),
        "readout": _mlp(groups, [d, llm_dim, llm_dim]),
    }
    return out


def global_flops(cfg: HIComConfig, frames: int, grid: int, d: int, text_dim: int, llm_dim: int,
                 text_len: int, folded: bool) -> dict[str, int]:
    """Global branch of one video; ``folded``: the default compute, else the textbook form."""
    n, keys = cfg.num_global_queries, frames * grid * grid
    out = {"injection": _injector(cfg.global_injection, n, d, text_dim, text_len, cfg, cfg.global_adapt_g)}
    if not folded:
        out["attention"] = _attention_unfolded(n, keys, d)
        out["readout"] = _mlp(n, [d, llm_dim, llm_dim])
        return out
    heads = num_attention_heads(d, cfg.attn_head_dim)
    unique = 1 if cfg.global_injection == "direct" else n  # identical queries are attended once
    widths = split_channels(d) if cfg.pos_emb == "split" else (d, d, d)
    pos = sum(mm(heads * unique, size, width) for size, width in zip((frames, grid, grid), widths))
    out["attention"] = (
        mm(unique, d, d)  # q_proj
        + 2 * mm(heads * unique, d, d // heads)  # W_k folded into the queries, W_v after the sum
        + mm(heads * unique, 1, d // heads)  # q . b_k
        + 2 * mm(heads * unique, keys, d)  # logits and weighted sum over the raw features
        + pos * (2 if cfg.pos_emb_on_values else 1)  # factored position terms
        + mm(unique, d, d)  # out_proj
    )
    out["readout"] = _mlp(unique, [d, llm_dim, llm_dim])
    return out


def compressor_flops(cfg: HIComConfig, frames: int, grid: int, d: int, text_dim: int, llm_dim: int,
                     text_len: int = 64, folded: bool = True) -> dict[str, int]:
    """Forward FLOPs of ``HIComCompressor`` for one video, by branch and part (``local.readout``, ...)."""
    out: dict[str, int] = {}
    if cfg.has_local:
        out.update({f"local.{k}": v for k, v in local_flops(cfg, frames, grid, d, text_dim, llm_dim,
                                                            text_len).items()})
    if cfg.has_global:
        out.update({f"global.{k}": v for k, v in global_flops(cfg, frames, grid, d, text_dim, llm_dim,
                                                              text_len, folded).items()})
    out["total"] = sum(out.values())
    return out


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    """Compressor vs SigLIP vision forward at 32 frames, for the release and paper presets."""
    shape = SiglipShape()
    frames, llm_dim = 32, 3584
    tower = siglip_vision_flops(frames, shape)
    records = []
    for preset in ("release", "paper"):
        cfg = PRESETS[preset]
        ours = compressor_flops(cfg, frames, shape.grid, shape.width, shape.width, llm_dim)
        textbook = compressor_flops(cfg, frames, shape.grid, shape.width, shape.width, llm_dim, folded=False)
        records.append(fraction(
            "P4", f"compressor / SigLIP-so400m vision forward FLOPs, 32 frames ({preset} preset)",
            ours["total"] / 1e9, tower["total"] / 1e9, "GFLOP", target="<= 0.02",
            note=(f"analytic matmul FLOPs, forward; textbook (unfolded) compressor "
                  f"{textbook['total'] / 1e9:.1f} GFLOP = {textbook['total'] / tower['total']:.2%} of the tower"),
            details={"compressor": ours, "compressor_textbook": textbook, "siglip": tower,
                     "llm_dim": llm_dim, "frames": frames},
        ))
    return records
