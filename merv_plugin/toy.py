"""MERV's row of the toy zoo (:mod:`llava.toy.zoo`): the four tiny encoders of :mod:`merv_plugin.tiny`
(built for the zoo's 8 frames), the ``full`` recipe of ``scripts/train/merv/tiny`` (alignment, then
fine-tuning), the ``cross_attention_avg_lq`` mixer on a 2 x 3 x 3 grid: 18 tokens."""

from __future__ import annotations

from pathlib import Path

from llava.plugin import ToyRow, ToyStage

PICTURE = "merv_plugin.figures:toy_picture"  # (row, model_dir, clips, out) -> PNG


TOWER_DIRNAME = "merv-tower-zoo"
FRAMES = 8


def prepare(tiny) -> dict[str, str]:
    """The tiny four-encoder tower under ``tiny`` (built once)."""
    from .tiny import make_tiny_merv_tower

    tower = Path(tiny) / TOWER_DIRNAME
    if not (tower / "config.json").is_file():
        make_tiny_merv_tower(tower, num_frames=FRAMES)
    return {"TOWER": str(tower)}


ROWS = (
    ToyRow(name="merv", label="MERV: four encoders, cross-attention mixer (2x3x3 grid)", methods=("merv",),
           stages=tuple(ToyStage(f"scripts/train/merv/tiny/{name}.sh") for name in ("stage1_full_align",
                                                                                  "stage2_finetune")),
           env={"RECIPE": "full", "GRID": "2,3,3"}, prepare=prepare, picture=PICTURE),
)
