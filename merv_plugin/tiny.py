"""Tiny offline stand-ins for MERV's four encoders, built by the project and saved HF-format.

``make_tiny_merv_tower(out)`` writes a tower folder (``config.json`` with ``model_type: merv_tower``) and
one subfolder per encoder, each saved by its real HF class (``save_pretrained``) and read back through
the same folder path as a real checkpoint. Widths, grids and frame rates differ on purpose, so that
every per-encoder path is exercised:

============  ========================  =======  ======  =====  =====================
encoder       class                     width    input   grid   frames per LLM frame
============  ========================  =======  ======  =====  =====================
languagebind  CLIPVisionModel           32       16 px   4x4    1
dinov2        Dinov2WithRegistersModel  24       28 px   4x4    1 (4 registers)
vivit         VivitModel                16       24 px   6x6    2 (tubelet 2, window 4)
siglip        SiglipVisionModel         32       20 px   5x5    1
============  ========================  =======  ======  =====  =====================

Run ``python -m merv_plugin.tiny OUT`` to build it for the tiny training scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from .encoders import KINDS

logger = logging.getLogger(__name__)

TINY_NUM_FRAMES = 4
_COMMON = dict(num_hidden_layers=2, num_attention_heads=2)

#: name -> (kind, config fields, tower-entry extras); MERV's encoder order
TINY_ENCODERS = {
    "languagebind": ("clip_frames", dict(hidden_size=32, intermediate_size=64, image_size=16, patch_size=4,
                                         projection_dim=32, **_COMMON), {}),
    "dinov2": ("dinov2", dict(hidden_size=24, mlp_ratio=2, image_size=28, patch_size=7, num_register_tokens=4,
                              **_COMMON), {}),
    "vivit": ("vivit", dict(hidden_size=16, intermediate_size=32, image_size=24, num_frames=4, tubelet_size=[2, 4, 4],
                            **_COMMON), {"frame_rate": 2}),
    "siglip": ("siglip", dict(hidden_size=32, intermediate_size=64, image_size=20, patch_size=4, **_COMMON), {}),
}


def make_tiny_encoder(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """One tiny encoder ``name`` (a key of :data:`TINY_ENCODERS`), saved by its HF class into ``out_dir``."""
    kind, fields, _ = TINY_ENCODERS[name]
    info = KINDS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = info.config_class(**fields)
        model = info.model_class(config, **info.model_kwargs(config))
    model.save_pretrained(out_dir)
    return Path(out_dir)


def make_tiny_merv_tower(out_dir: str | Path, seed: int = 0, encoders: tuple[str, ...] = tuple(TINY_ENCODERS),
                         num_frames: int | None = TINY_NUM_FRAMES) -> Path:
    """A tower folder with the tiny ``encoders`` (in that order; the first is the primary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, name in enumerate(encoders):
        kind, _, extras = TINY_ENCODERS[name]
        make_tiny_encoder(name, out / name, seed=seed + index)
        entries.append({"name": name, "kind": kind, "path": name, **extras})
    config = {"model_type": "merv_tower", "num_frames": num_frames, "encoders": entries}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    logger.info("tiny MERV tower %s: %s", out, ", ".join(encoders))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="tower folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    make_tiny_merv_tower(args.out, seed=args.seed)


if __name__ == "__main__":
    main()
