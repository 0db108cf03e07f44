"""A tiny Qwen2 that has read about the tiles: the shared pre-training every toy row starts from.

A real video LLM starts from a pre-trained LLM that already reads a context, finds what a question
names in it and answers in the benchmark's format; only the visual path is new. The random tiny
Qwen2 of :mod:`llava.toy.tiny` knows none of that, and learning it from scratch in the instruction
tuning (locate the tile the question names among 392 visual tokens, read its centre, map the color
to a letter) is where every uncompressed toy run stalled: the answer letter stayed near chance
however long the tuning ran.

This module makes the stand-in for that pre-trained LLM, offline, before any row trains:

* the tokenizer gains a *rim* token and a *centre* token per color, ``<|rim_red|>``,
  ``<|centre_blue|>``, and an empty-cell token ``<|cell|>``;
* the LLM reads *scenes*: runs of cells, each the ``<|cell|>`` embedding or a tile's, which is the
  **sum** of its rim and centre tokens' embeddings, with Gaussian noise added to every cell
  (:attr:`PretrainSettings.noise`, relative to the cells' RMS). Sums and noise are why the loop is
  this module's own and not the text trainer's (which embeds one token per position). A tile made of
  two parts is what a visual path can produce: a projector is a smooth map of features in which a
  tile's rim and centre colors are separate directions, so it reaches "rim part + centre part"
  far sooner than one arbitrary embedding per tile kind (the first version of this module, whose
  reference stayed at chance); the noise teaches the LLM to read a cell that is only near its word;
* a scene has a random length (a few cells to :data:`MAX_CONTEXT`), cut into a random number of
  "frames" in which each tile keeps its slot from its first frame on. Layouts are random, so the LLM
  learns to find a tile wherever a visual path will put it, not one projector's layout;
* the questions are the toy set's, about scenes of one to three tiles, in the formats of every stage
  script: the eval's multiple-choice question in MVBench's prompt (60%), the reverse question, the
  caption asked for, and the knowledge stage's description (a tile's centre, its place on the
  frame's slots read as a square grid, its first frame), in the ``qwen_1_5`` chat format; and the
  caption in the alignment stage's ``plain`` format. An LLM that already reads the alignment stages'
  answers from a scene gives their frozen-LLM steps a signal to align the visual path with (without
  them, a reference after its two alignment stages answered 23-30% zero-shot).

Every toy row (trained compressors and the uncompressed reference alike) starts from this folder;
nothing in it has seen a pixel. The visual path then learns, in each method's own stages, to produce
what this LLM reads.

    python -m llava.toy.tiny_pretrain --tiny playground/tiny [--steps 1500] [--seed 0] [--force]

writes ``TINY/qwen2-tiny-tiles/`` (a full HF folder with the tokenizer) with ``pretrain.json``: the
settings, the loss before and after, and the multiple-choice accuracy on held-out scenes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llava.toy.synthetic import (
    CAPTION_PROMPT,
    COLORS,
    Scene,
    SceneObject,
    caption,
    color_question,
    describe,
    multiple_choice_answer,
    multiple_choice_prompt,
    sample_colors,
)
from llava.toy.tiny import QWEN2_DIRNAME, embedding_rows

logger = logging.getLogger(__name__)

PRETRAINED_DIRNAME = "qwen2-tiny-tiles"
RECORD_NAME = "pretrain.json"
PRETRAIN_VERSION = 4  # raised when what a settings tuple produces changes
EMPTY_TOKEN = "<|cell|>"
MAX_CONTEXT = 144  # cells of the longest scene (the reference's 392 tokens it meets in the rows' tuning)
SHORT_CONTEXT = 48  # half of the scenes are at most this long: the retrieval is learnt fastest on short ones
EVAL_SCENES = 200
# The chat frame of the stage scripts' ``--version qwen_1_5``: the scene stands where <video> is.
CHAT_BEFORE = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
CHAT_AFTER = "\n{question}<|im_end|>\n<|im_start|>assistant\n"
CHAT_ANSWER = "{answer}<|im_end|>\n"
PLAIN_ANSWER = "{answer}\n"  # the ``plain`` template of the alignment stage: the caption right after the scene


def rim_token(color: str) -> str:
    return f"<|rim_{color}|>"


def centre_token(color: str) -> str:
    return f"<|centre_{color}|>"


def world_tokens() -> list[str]:
    """The added tokens: a rim and a centre token per color, then the empty cell."""
    return [rim_token(c) for c in COLORS] + [centre_token(c) for c in COLORS] + [EMPTY_TOKEN]


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1500
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 50
    noise: float = 0.5  # std of the noise on every cell's embedding, relative to the cells' RMS
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """One conversation about a scene: ``cells`` as (rim, centre) colors or None for an empty cell."""

    cells: tuple[tuple[str, str] | None, ...]
    question: str
    answer: str
    tiles: tuple[tuple[str, str], ...]
    multiple_choice: bool
    plain: bool = False  # LLaVA's ``plain`` template: the cells, then the answer, with no chat frame


def scene_cells(rng: random.Random, tiles: int) -> tuple[list[tuple[str, str]], list[tuple[str, str] | None],
                                                      Scene, int]:
    """``tiles`` (rim, centre) pairs; a scene of cells: a random number of frames of a random number of
    slots, each tile in its own slot from a random first frame on, empty cells elsewhere; the scene as
    the toy set's text sees it, with each tile's slot on the frame's slots read as a square grid of
    the returned side (row-major, as a projector's patches come) and its first frame."""
    frames = rng.randint(1, 8)
    longest = SHORT_CONTEXT if rng.random() < 0.5 else MAX_CONTEXT
    slots = rng.randint(max(tiles, 2), max(tiles, longest // frames))
    places = rng.sample(range(slots), tiles)
    pairs = sample_colors(rng, tiles)
    appears = [rng.randrange(frames) if rng.random() < 0.5 else 0 for _ in pairs]
    cells: list[tuple[str, str] | None] = []
    for frame in range(frames):
        row: list[tuple[str, str] | None] = [None] * slots
        for pair, place, first in zip(pairs, places, appears):
            if frame >= first:
                row[place] = pair
        cells.extend(row)
    side = math.isqrt(slots - 1) + 1
    scene = Scene(tuple(SceneObject(rim, centre, place // side, place % side, first)
                        for (rim, centre), place, first in zip(pairs, places, appears)), (0, 0), frames)
    return pairs, cells, scene, side


def sample(rng: random.Random, multiple_choice_only: bool = False) -> Sample:
    """A random scene of one to three tiles and one of the toy set's questions about it: the eval's
    multiple choice (60%), the reverse question, the caption asked for in the chat format, the caption
    in the alignment stage's ``plain`` format (the scene, then the caption) and the knowledge stage's
    description (10% each)."""
    pairs, cells, scene, side = scene_cells(rng, rng.choice((1, 2, 3, 3, 3)))
    rim, centre = rng.choice(pairs)
    kind = 0.0 if multiple_choice_only else rng.random()
    options = tuple(COLORS)
    if kind < 0.6:
        question, answer = multiple_choice_prompt(color_question(rim), options), multiple_choice_answer(centre, options)
    elif kind < 0.7:
        question, answer = f"Which tile has a {centre} centre?", f"The {rim} tile."
    elif kind < 0.9:
        question, answer = CAPTION_PROMPT, caption(scene)
    else:
        question, answer = describe(scene.find(rim), scene, side)
    return Sample(tuple(cells), question, answer, tuple(pairs), kind < 0.6, plain=0.8 <= kind < 0.9)


class SceneReader:
    """Embeds samples for the LLM: chat text around the scene's cells; labels on the answer only."""

    def __init__(self, model, tokenizer, noise: float):
        self.model, self.noise = model, noise
        self.embed = model.get_input_embeddings()
        ids = tokenizer.convert_tokens_to_ids
        self.rim = {c: ids(rim_token(c)) for c in COLORS}
        self.centre = {c: ids(centre_token(c)) for c in COLORS}
        self.empty = ids(EMPTY_TOKEN)
        self.tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        self.before = self.tokenize(CHAT_BEFORE)
        self.letters = [self.tokenize(f"({letter}")[-1] for letter in "ABCDE"]

    def batch(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``inputs_embeds (B, L, hidden)``, ``attention_mask (B, L)``, ``labels (B, L)`` (-100 but the answer).

        Every position embeds one token, except a tile's cell: its rim token's embedding plus its
        centre token's; cells get noise while the model trains."""
        rows = []  # per sample: (token ids, centre ids added at tile cells or -1, is a cell, labels)
        for item in samples:
            if item.plain:
                before, after, answer = [], [], self.tokenize(PLAIN_ANSWER.format(answer=item.answer))
            else:
                before = self.before
                after = self.tokenize(CHAT_AFTER.format(question=item.question))
                answer = self.tokenize(CHAT_ANSWER.format(answer=item.answer))
            cells = [self.rim[c[0]] if c else self.empty for c in item.cells]
            centres = [self.centre[c[1]] if c else -1 for c in item.cells]
            text = len(before), len(after) + len(answer)
            rows.append((before + cells + after + answer, [-1] * text[0] + centres + [-1] * text[1],
                         [False] * text[0] + [True] * len(cells) + [False] * text[1],
                         [-100] * (len(before) + len(cells) + len(after)) + answer))
        length = max(len(r[0]) for r in rows)
        pad = lambda values, fill: torch.tensor([v + [fill] * (length - len(v)) for v in values])  # noqa: E731
        ids, centres = pad([r[0] for r in rows], self.empty), pad([r[1] for r in rows], -1)
        is_cell, labels = pad([r[2] for r in rows], False), pad([r[3] for r in rows], -100)
        mask = pad([[1] * len(r[0]) for r in rows], 0)
        embeds = self.embed(ids) + self.embed(centres.clamp(min=0)) * (centres >= 0)[..., None]
        if self.noise and self.model.training:
            scale = embeds[is_cell].detach().pow(2).mean().sqrt()
            embeds = embeds + self.noise * scale * torch.randn_like(embeds) * is_cell[..., None]
        return embeds, mask, labels

    @torch.no_grad()
    def multiple_choice_accuracy(self, samples: list[Sample]) -> float:
        """Share of multiple-choice samples whose letter (after the answer's "(") is the right one."""
        correct = 0
        for start in range(0, len(samples), 50):
            chunk = samples[start : start + 50]
            embeds, mask, labels = self.batch(chunk)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits
            for row, item in enumerate(chunk):
                letter_at = int((labels[row] != -100).nonzero()[1])  # the answer's second token: the letter
                guess = logits[row, letter_at - 1, self.letters].argmax().item()
                correct += int("ABCDE"[guess] == item.answer[1])
        return correct / len(samples)


def answer_loss(model, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal LM loss of ``labels`` (mean over the answer tokens, as the model's own loss), with the
    LM head applied only where a next token is supervised: most positions are scene and prompt, and
    the head is about half of this LLM's compute."""
    hidden = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    supervised = targets != -100
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[supervised]).float(), targets[supervised])


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


def pretrain(tiny: Path, work: Path, settings: PretrainSettings, progress: bool = False) -> dict:
    """Trains the tiles' LLM into ``work/trained``; returns the record."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    start, trained = work / "init", work / "trained"
    torch.manual_seed(settings.seed)
    add_world_tokens(tiny / QWEN2_DIRNAME, start)
    tokenizer = AutoTokenizer.from_pretrained(start)
    model = Qwen2ForCausalLM.from_pretrained(start)
    reader = SceneReader(model, tokenizer, settings.noise)
    held_out_rng = random.Random(f"{settings.seed}/held-out")
    held_out = [sample(held_out_rng, multiple_choice_only=True) for _ in range(EVAL_SCENES)]
    model.eval()
    before = reader.multiple_choice_accuracy(held_out)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / settings.warmup) * 0.5 * (1 + math.cos(math.pi * step / settings.steps)))
    rng, started, losses = random.Random(f"{settings.seed}/scenes"), time.perf_counter(), []
    for step in tqdm(range(settings.steps), desc="LLM pre-training on scenes", unit="step", disable=not progress,
                     leave=False):
        embeds, mask, labels = reader.batch([sample(rng) for _ in range(settings.batch)])
        loss = answer_loss(model, embeds, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            logger.info("LLM pre-training step %d: loss %.4f", step + 1, loss.item())
    model.eval()
    after = reader.multiple_choice_accuracy(held_out)
    model.save_pretrained(trained)
    tokenizer.save_pretrained(trained)
    return {"version": PRETRAIN_VERSION, "settings": asdict(settings), "source": QWEN2_DIRNAME,
            "steps": settings.steps, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "held_out_multiple_choice": {"scenes": EVAL_SCENES, "before": before, "after": after},
            "seconds": round(time.perf_counter() - started, 1)}


def make_pretrained_llm(tiny: str | Path, settings: PretrainSettings = PretrainSettings(),
                        force: bool = False, progress: bool = False) -> Path:
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
    record = pretrain(tiny, work, settings, progress)
    trained = work / "trained"
    (trained / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    trained.rename(out)
    shutil.rmtree(work)
    logger.info("wrote %s (%d steps, loss %.3f -> %.3f, held-out multiple choice %.2f -> %.2f, %.0f s)", out,
                record["steps"], record["first_loss"] or 0, record["last_loss"] or 0,
                record["held_out_multiple_choice"]["before"], record["held_out_multiple_choice"]["after"],
                record["seconds"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.tiny_pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", default="playground/tiny", help="folder holding qwen2-tiny (llava.toy.tiny --out)")
    parser.add_argument("--steps", type=int, default=PretrainSettings.steps, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=PretrainSettings.seed, help="seed of the corpus and the trainer")
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = make_pretrained_llm(args.tiny, PretrainSettings(steps=args.steps, seed=args.seed), force=args.force,
                              progress=True)
    print(json.dumps(json.loads((out / RECORD_NAME).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
