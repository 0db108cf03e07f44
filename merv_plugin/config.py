"""``MERVConfig``: the projector's options (alignment grid, fusion), saved as ``config.merv_config``.

MERV's ``merv-base`` (``merv/conf/models.py``): ``arch_specifier = "no-align+3davg+linear"`` (each
encoder pooled to 16 x 8 x 8, then a Linear to the LLM width), ``feature_fusion =
"cross_attention_avg_lq"`` with a 3072-wide query. Its string grammar is not carried over: the options
are these fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava.plugin import OptionsMixin

#: fusion -> what it does; every one but ``concat`` keeps ``t*h*w`` tokens for any number of encoders
FUSIONS = {
    "cross_attention_avg_lq": "a learnable query attends over the encoders' mean tokens; softmax weights mix them",
    "scalar": "static learnable softmax weights per encoder",
    "concat_channel": "channel concatenation, then a Linear (E*d -> d)",
    "concat": "sequence concatenation (E * t*h*w tokens)",
}


@dataclass(frozen=True)
class MERVConfig(OptionsMixin):
    """Options of :class:`merv_plugin.projector.MERVProjector`; defaults are ``merv-base``.

    Attributes:
        grid: ``(t, h, w)`` every encoder is pooled to (3D adaptive average). ``t = None``: one slot
            per LLM frame of a video (images: one), so the count grows with the frames.
        fusion: one of :data:`FUSIONS`.
        query_dim: width of the mixer's query (MERV: 3072, independent of the LLM).
    """

    grid: tuple[int | None, int, int] = (16, 8, 8)
    fusion: str = "cross_attention_avg_lq"
    query_dim: int = 3072

    def __post_init__(self) -> None:
        grid = tuple(self.grid)
        if len(grid) != 3 or any(v is not None and (not isinstance(v, int) or v < 1) for v in grid) or None in grid[1:]:
            raise ValueError(f"MERVConfig.grid={self.grid!r}: expected (t, h, w) positive integers, t may be null")
        object.__setattr__(self, "grid", grid)
        if self.fusion not in FUSIONS:
            raise ValueError(f"MERVConfig.fusion={self.fusion!r}; allowed: {', '.join(FUSIONS)}")
        if not isinstance(self.query_dim, int) or self.query_dim < 1:
            raise ValueError(f"MERVConfig.query_dim={self.query_dim!r}; expected a positive integer")

    def slots(self, frames: int, modality: str) -> int:
        """Temporal slots of an item with ``frames`` LLM frames."""
        if self.grid[0] is not None:
            return self.grid[0]
        return frames if modality == "video" else 1

    def num_tokens(self, frames: int, modality: str, num_encoders: int) -> int:
        count = self.slots(frames, modality) * self.grid[1] * self.grid[2]
        return count * num_encoders if self.fusion == "concat" else count


def parse_grid(text: str) -> list[int | None]:
    """``"16,8,8"`` or ``"frame,8,8"`` (one slot per LLM frame) -> ``[t, h, w]``."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ValueError(f"--merv_grid {text!r}: expected t,h,w (t may be 'frame')")
    try:
        return [None if parts[0] == "frame" else int(parts[0]), int(parts[1]), int(parts[2])]
    except ValueError:
        raise ValueError(f"--merv_grid {text!r}: expected integers t,h,w (t may be 'frame')") from None


def merv_config_from(config) -> MERVConfig:
    """The options of a LLaVA config (``merv_config``, else the defaults, which are then recorded)."""
    stored = getattr(config, "merv_config", None)
    cfg = MERVConfig.from_dict(stored) if stored else MERVConfig()
    config.merv_config = cfg.to_dict()
    return cfg
