"""A tiny SigLIP whose text tower knows the synthetic tiles: Locked-image Tuning on rendered frames.

An instruction-conditioned compressor reads SigLIP's text embedding of the instruction, and relies on
SigLIP having been pre-trained: "the centre of the red tile" must land somewhere else than "the centre
of the blue tile". The random tiny SigLIP of :mod:`llava.toy.tiny` cannot do that: its pooled text
output (the last of the padded positions) is almost the same for every short text (pairwise cosine >=
0.99), so an instruction-conditioned compressor has nothing to condition on.

This module makes the stand-in for a pre-trained SigLIP, offline, in about 20 s on 2 CPU cores:

* the vision tower is the random one of ``siglip-tiny``, copied and **locked** (LiT, Zhai et al.
  2022): its patch features, which the compressors read, are unchanged;
* a fresh text tower with ``TEXT_LENGTH`` positions (SigLIP's own pooling, the last position, over 16
  instead of 64 padded positions: with 64, the text tower stayed collapsed for 1,000 steps), the
  vision pooling head and SigLIP's logit scale and bias are trained with SigLIP's sigmoid loss on
  frames rendered by :mod:`llava.toy.synthetic` (one to three tiles at random cells);
* two terms: each frame's pooled embedding against every text (a text is a positive for every frame
  holding a tile it describes), and each tile's patch (dense embedding: the head MLP on the last
  layer, the keys of compressors that attend by image-text similarity) against every text, plus the
  background patches as negatives with a small weight.

Texts name a tile by its rim ("the red tile", the eval's question "What color is the centre of the
red tile?", "Describe the red tile."), by its centre ("a tile with a blue centre") or by both.

    python -m llava.toy.tiny_lit --tiny playground/tiny [--steps 800] [--seed 0] [--force]

writes ``TINY/siglip-tiny-lit/`` (a full HF ``SiglipModel`` folder with tokenizer and image processor)
and ``lit.json`` in it (settings and the measured separation of the instructions).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipModel

from llava.model.multimodal_encoder.siglip_encoder import dense_patch_embeddings
from llava.model.weights import read_json
from llava.toy.synthetic import COLORS, Scene, SceneObject, color_question, render_frame, sample_colors
from llava.toy.tiny import SIGLIP_DIRNAME, save_siglip

logger = logging.getLogger(__name__)

LIT_DIRNAME = "siglip-tiny-lit"
RECORD_NAME = "lit.json"
TEXT_LENGTH = 16
LIT_VERSION = 1  # raised when what a (steps, seed) pair produces changes


@dataclass(frozen=True)
class LitSettings:
    steps: int = 800
    seed: int = 0
    batch: int = 32
    lr: float = 3e-3
    global_weight: float = 0.3  # the frame-level term; the tile-level term has weight 1
    background_weight: float = 0.1  # background patches: negatives for every text
    noise: float = 0.03  # pixel noise (normalised units), for the videos' compression artefacts
    size: int = 56
    patch: int = 8


def lit_texts() -> tuple[list[str], list[tuple[str | None, str | None]]]:
    """Texts and the (rim, centre) each one requires (``None``: any)."""
    texts, refs = [], []
    for rim in COLORS:
        for text in (f"the {rim} tile", color_question(rim), f"Describe the {rim} tile."):
            texts.append(text)
            refs.append((rim, None))
        texts.append(f"a tile with a {rim} centre")
        refs.append((None, rim))
    for rim in COLORS:
        for centre in COLORS:
            if centre != rim:
                texts.append(f"a {rim} tile with a {centre} centre")
                refs.append((rim, centre))
    return texts, refs


def _matches(obj: SceneObject, ref: tuple[str | None, str | None]) -> bool:
    return (ref[0] is None or obj.rim == ref[0]) and (ref[1] is None or obj.centre == ref[1])


def _frame_scene(rng: random.Random, cells: int) -> Scene:
    count = rng.randint(1, 3)
    spots = rng.sample([(r, c) for r in range(cells) for c in range(cells)], count)
    tiles = tuple(SceneObject(rim, centre, r, c, 0) for (rim, centre), (r, c) in zip(sample_colors(rng, count), spots))
    return Scene(tiles, (0, 0), 1)


def _batch(rng: random.Random, settings: LitSettings, refs, generator: torch.Generator):
    """Pixels ``(B, 3, S, S)`` normalised as SigLIP's processor does, frame labels ``(B, T)``, tile-patch
    labels ``(B, P, T)`` and the tile-patch mask ``(B, P)``."""
    cells = settings.size // settings.patch
    scenes = [_frame_scene(rng, cells) for _ in range(settings.batch)]
    pixels = torch.from_numpy(np.stack([render_frame(s, 0, settings.size, settings.patch) for s in scenes]))
    pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pixels = pixels + settings.noise * torch.randn(pixels.shape, generator=generator)
    frame_labels = torch.zeros(settings.batch, len(refs))
    patch_labels = torch.zeros(settings.batch, cells * cells, len(refs))
    tile_mask = torch.zeros(settings.batch, cells * cells, dtype=torch.bool)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            hits = torch.tensor([float(_matches(obj, ref)) for ref in refs])
            frame_labels[i] = torch.maximum(frame_labels[i], hits)
            patch_labels[i, obj.row * cells + obj.col] = hits
            tile_mask[i, obj.row * cells + obj.col] = True
    return pixels, frame_labels, patch_labels, tile_mask


def _text_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_LENGTH,
                     return_tensors="pt")["input_ids"]


def instruction_separation(model: SiglipModel, tokenizer) -> float:
    """Largest cosine between the pooled embeddings of two eval questions naming different rims."""
    ids = _text_ids(tokenizer, [color_question(rim) for rim in COLORS])
    with torch.no_grad():
        pooled = F.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    cos = pooled @ pooled.T
    return cos.masked_fill(torch.eye(len(COLORS), dtype=torch.bool), -1.0).max().item()


def train_lit(source: Path, settings: LitSettings, progress: bool = False) -> tuple[SiglipModel, dict]:
    """LiT of a fresh text tower against ``source``'s locked vision tower; returns the model and a record."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    # built from the file, not with from_pretrained: transformers' from_pretrained logs the config against
    # a default SiglipTextConfig whose special-token ids lie outside a small vocabulary, and warns
    saved = SiglipConfig(**read_json(Path(source) / "config.json"))
    config = SiglipConfig(**read_json(Path(source) / "config.json"))
    config.text_config.max_position_embeddings = TEXT_LENGTH
    torch.manual_seed(settings.seed)
    model = SiglipModel(config)
    locked = SiglipModel.from_pretrained(source, config=saved).vision_model.state_dict()
    model.vision_model.load_state_dict(locked, strict=True)
    model.vision_model.requires_grad_(False)
    model.vision_model.head.requires_grad_(True)
    tokenizer = AutoTokenizer.from_pretrained(source, config=config.text_config)  # no config rebuilt: no warning
    texts, refs = lit_texts()
    ids = _text_ids(tokenizer, texts)
    rim_texts = [k for k, ref in enumerate(refs) if ref[1] is None][::3]  # "the {rim} tile", in COLORS order
    before = instruction_separation(model, tokenizer)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    rng, generator = random.Random(settings.seed), torch.Generator().manual_seed(settings.seed)
    model.train()
    started, history = time.perf_counter(), []
    for step in tqdm(range(1, settings.steps + 1), desc="LiT of the tiny SigLIP", unit="step", disable=not progress,
                     leave=False):
        pixels, frame_labels, patch_labels, tile_mask = _batch(rng, settings, refs, generator)
        vision = model.vision_model(pixel_values=pixels)
        frames = F.normalize(vision.pooler_output, dim=-1)
        patches = F.normalize(dense_patch_embeddings(model.vision_model, vision.last_hidden_state), dim=-1)
        text = F.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
        scale, bias = model.logit_scale.exp(), model.logit_bias
        frame_loss = F.binary_cross_entropy_with_logits(frames @ text.T * scale + bias, frame_labels)
        patch_logits = patches @ text.T * scale + bias
        tile_loss = F.binary_cross_entropy_with_logits(patch_logits[tile_mask], patch_labels[tile_mask])
        background_loss = F.binary_cross_entropy_with_logits(patch_logits[~tile_mask], patch_labels[~tile_mask])
        loss = settings.global_weight * frame_loss + tile_loss + settings.background_weight * background_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == settings.steps:
            tiles = patch_logits[tile_mask][:, rim_texts]
            truth = patch_labels[tile_mask][:, rim_texts]
            rim_accuracy = (tiles.argmax(-1) == truth.argmax(-1)).float().mean().item()
            history.append({"step": step, "loss": round(loss.item(), 4), "rim_accuracy": round(rim_accuracy, 3)})
            logger.info("LiT step %d: loss %.4f, tile -> rim accuracy %.2f", step, loss.item(), rim_accuracy)
    model.eval()
    after = instruction_separation(model, tokenizer)
    record = {
        "version": LIT_VERSION, "settings": asdict(settings), "source": SIGLIP_DIRNAME,
        "seconds": round(time.perf_counter() - started, 1), "history": history,
        "max_instruction_cosine": {"before": round(before, 4), "after": round(after, 4)},
    }
    return model, record


def make_lit_siglip(tiny: str | Path, settings: LitSettings = LitSettings(), force: bool = False,
                    progress: bool = False) -> Path:
    """``TINY/siglip-tiny-lit`` from ``TINY/siglip-tiny`` (which must exist: ``llava.toy.tiny.make_all``).
    Reused when its ``lit.json`` records the same settings and version; built in a hidden sibling
    folder and renamed into place, so a folder that exists is whole."""
    tiny = Path(tiny)
    source, out = tiny / SIGLIP_DIRNAME, tiny / LIT_DIRNAME
    if not (source / "model.safetensors").is_file():
        raise FileNotFoundError(f"{source}: no tiny SigLIP to start from; run "
                                f"`python -m llava.toy.tiny --out {tiny}` first")
    record_path = out / RECORD_NAME
    if not force and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("version") == LIT_VERSION and record.get("settings") == asdict(settings):
            return out
    model, record = train_lit(source, settings, progress)
    staging = tiny / f".{LIT_DIRNAME}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("config.json", "*.safetensors"))
    save_siglip(model, staging)
    (staging / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    cosine = record["max_instruction_cosine"]
    logger.info("wrote %s (%.0f s; largest cosine between two instructions %.3f -> %.3f)", out, record["seconds"],
                cosine["before"], cosine["after"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.tiny_lit", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", default="playground/tiny", help="folder holding siglip-tiny (llava.toy.tiny --out)")
    parser.add_argument("--steps", type=int, default=LitSettings.steps, help="LiT training steps")
    parser.add_argument("--seed", type=int, default=LitSettings.seed, help="seed of the text tower and the data")
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = make_lit_siglip(args.tiny, LitSettings(steps=args.steps, seed=args.seed), force=args.force, progress=True)
    print(json.loads((out / RECORD_NAME).read_text())["max_instruction_cosine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
