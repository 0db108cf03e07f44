"""A tiny Qwen2 that has read about the tiles: the shared text pre-training every toy row starts from.

A real video LLM starts from a pre-trained LLM that already reads a context, finds what a question
names in it and answers in the benchmark's format; only the visual path is new. The random tiny
Qwen2 of :mod:`llava.toy.tiny` knows none of that, and learning it from scratch in the instruction
tuning (locate the tile the question names among 128 visual tokens, read its centre, map the color
to a letter) is where every uncompressed toy run stalled: the answer letter stayed at chance for
1,200 steps while the format was learned.

This module makes the stand-in for that pre-trained LLM, offline, with the project's trainer on
text-only conversations:

* the tokenizer gains one token per tile kind, ``<|tile_RIM_CENTRE|>`` (20 kinds), and an empty-cell
  token ``<|cell|>``: the words of a world made of tiles;
* every conversation starts with a *scene in words*: a run of cells, each empty or a tile token, of a
  random length (a few to :data:`MAX_CONTEXT`) cut into a random number of "frames" in which each tile
  keeps its slot from its first frame on. Layouts are random, so the LLM learns to find a tile
  wherever a visual path will later put it, not one projector's layout;
* the questions are the toy set's: the eval's multiple-choice question in MVBench's prompt, the
  reverse question, and the caption, about scenes of one to three tiles.

Every toy row (trained compressors and the uncompressed reference alike) starts from this folder;
nothing in it has seen a pixel. The visual path then learns, in each method's own alignment stages,
to produce what this LLM reads.

    python -m llava.toy.tiny_pretrain --tiny playground/tiny [--steps 600] [--seed 0] [--force]

writes ``TINY/qwen2-tiny-tiles/`` (a full HF folder with the tokenizer) with ``pretrain.json`` (the
settings and the loss before and after).
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

from llava.toy.synthetic import (
    CAPTION_PROMPT,
    COLORS,
    Scene,
    SceneObject,
    caption,
    color_question,
    multiple_choice_answer,
    multiple_choice_prompt,
    sample_colors,
)
from llava.toy.tiny import QWEN2_DIRNAME, embedding_rows

logger = logging.getLogger(__name__)

PRETRAINED_DIRNAME = "qwen2-tiny-tiles"
RECORD_NAME = "pretrain.json"
PRETRAIN_VERSION = 2  # raised when what a settings tuple produces changes
EMPTY_TOKEN = "<|cell|>"
MAX_CONTEXT = 144  # cells of the longest scene in words (the uncompressed toy video has 128 tokens)
SHORT_CONTEXT = 48  # half of the scenes are at most this long: the retrieval is learnt fastest on short ones


def tile_token(rim: str, centre: str) -> str:
    return f"<|tile_{rim}_{centre}|>"


def world_tokens() -> list[str]:
    """The added tokens: every (rim, centre) pair of different colors, then the empty cell."""
    return [tile_token(rim, centre) for rim in COLORS for centre in COLORS if rim != centre] + [EMPTY_TOKEN]


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1200
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0


def scene_in_words(rng: random.Random, tiles: int) -> tuple[Scene, str]:
    """A scene of ``tiles`` tiles and its context: cells cut into frames, each tile in its own slot
    from its first frame on, empty cells elsewhere."""
    frames = rng.randint(1, 8)
    longest = SHORT_CONTEXT if rng.random() < 0.5 else MAX_CONTEXT
    slots = rng.randint(max(tiles, 2), max(tiles, longest // frames))
    places = rng.sample(range(slots), tiles)
    objects = tuple(SceneObject(rim, centre, 0, place, rng.randrange(frames) if rng.random() < 0.5 else 0)
                    for (rim, centre), place in zip(sample_colors(rng, tiles), places))
    cells = []
    for frame in range(frames):
        row = [EMPTY_TOKEN] * slots
        for obj in objects:
            if frame >= obj.appears:
                row[obj.col] = tile_token(obj.rim, obj.centre)
        cells.extend(row)
    return Scene(objects, (0, 0), frames), "".join(cells)


def conversation(rng: random.Random, index: int) -> dict:
    """One text-only training record about a random scene in words."""
    scene, context = scene_in_words(rng, rng.choice((1, 2, 3, 3, 3)))
    kind = rng.random()
    options = tuple(COLORS)
    obj = rng.choice(scene.objects)
    if kind < 0.7:
        question = multiple_choice_prompt(color_question(obj.rim), options)
        answer = multiple_choice_answer(obj.centre, options)
    elif kind < 0.85:
        question, answer = f"Which tile has a {obj.centre} centre?", f"The {obj.rim} tile."
    else:
        question, answer = CAPTION_PROMPT, caption(scene)
    return {"id": f"words{index}", "conversations": [{"from": "human", "value": f"{context}\n{question}"},
                                                     {"from": "gpt", "value": answer}]}


def write_corpus(path: Path, settings: PretrainSettings) -> Path:
    rng = random.Random(f"{settings.seed}/words")
    records = [conversation(rng, k) for k in range(settings.steps * settings.batch)]
    path.write_text(json.dumps(records))
    return path


def add_world_tokens(source: Path, out: Path) -> None:
    """Copies the tiny Qwen2 to ``out`` with :func:`world_tokens` added (new embedding rows drawn
    like the others)."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = Qwen2ForCausalLM.from_pretrained(source)
    tokenizer.add_tokens(world_tokens(), special_tokens=True)
    model.resize_token_embeddings(embedding_rows(len(tokenizer)), mean_resizing=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def pretrain(tiny: Path, work: Path, settings: PretrainSettings) -> dict:
    """Trains the tiles' LLM in ``work`` with ``llava.train.train`` (text only); returns the record."""
    from llava.train.train import train

    start = work / "init"
    add_world_tokens(tiny / QWEN2_DIRNAME, start)
    data = write_corpus(work / "words.json", settings)
    argv = ["--model_name_or_path", str(start), "--version", "qwen_1_5", "--data_path", str(data),
            "--output_dir", str(work / "trained"), "--per_device_train_batch_size", str(settings.batch),
            "--gradient_accumulation_steps", "1", "--num_train_epochs", "1", "--learning_rate", str(settings.lr),
            "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.03", "--weight_decay", "0.",
            "--model_max_length", "512", "--logging_steps", "25", "--save_strategy", "no", "--report_to", "none",
            "--seed", str(settings.seed), "--data_seed", str(settings.seed), "--dataloader_num_workers", "0",
            "--disable_tqdm", "True", "--gradient_checkpointing", "False", "--run_name", "tiles-pretrain"]
    started = time.perf_counter()
    trainer = train(argv=argv)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"version": PRETRAIN_VERSION, "settings": asdict(settings), "source": QWEN2_DIRNAME,
            "steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "seconds": round(time.perf_counter() - started, 1)}


def make_pretrained_llm(tiny: str | Path, settings: PretrainSettings = PretrainSettings(),
                        force: bool = False) -> Path:
    """``TINY/qwen2-tiny-tiles`` from ``TINY/qwen2-tiny`` (``llava.toy.tiny.make_all`` first). Reused
    when its record names the same settings and version; built in a hidden sibling and renamed into
    place, so a folder that exists is whole."""
    tiny = Path(tiny)
    out = tiny / PRETRAINED_DIRNAME
    if not (tiny / QWEN2_DIRNAME / "config.json").is_file():
        raise FileNotFoundError(f"{tiny / QWEN2_DIRNAME}: no tiny Qwen2 to start from; run "
                                f"`python -m llava.toy.tiny --out {tiny}` first")
    record_path = out / RECORD_NAME
    if not force and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("version") == PRETRAIN_VERSION and record.get("settings") == asdict(settings):
            return out
    work = tiny / f".{PRETRAINED_DIRNAME}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    record = pretrain(tiny, work, settings)
    trained = work / "trained"
    (trained / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    trained.rename(out)
    shutil.rmtree(work)
    logger.info("wrote %s (%d steps, loss %.3f -> %.3f, %.0f s)", out, record["steps"], record["first_loss"] or 0,
                record["last_loss"] or 0, record["seconds"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.tiny_pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", default="playground/tiny", help="folder holding qwen2-tiny (llava.toy.tiny --out)")
    parser.add_argument("--steps", type=int, default=PretrainSettings.steps, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=PretrainSettings.seed, help="seed of the corpus and the trainer")
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = make_pretrained_llm(args.tiny, PretrainSettings(steps=args.steps, seed=args.seed), force=args.force)
    print(json.dumps(json.loads((out / RECORD_NAME).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
