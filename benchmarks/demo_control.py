"""Control for the embedded default: can the toy model read one colored square at all?

    python -m benchmarks.demo_control [--out playground/demo_control] [--epochs 8]

How fast does the from-scratch toy LLM learn to read a visual token? (Written when every row of the
toy-scale ablation, ``hicom_plugin.tools.demo``, stayed at chance; the numbers below are from the random
tiny SigLIP and the paper preset of that time.) This control asks the simplest question of the same
stage-3 trainer, flags and evaluation: clips of one 8 px colored
square on the mid-grey background, "What color is the triangle?" in the MVBench prompt, five color
options. Three variants: ``fixed`` (the square always in the same cell), ``random`` (any cell) and
``distractors`` (the square in the fixed cell, plus two squares of other colors in cells of other
(4,3,3) groups); stage 3 only (projector from scratch), the ``avgpool_433`` row. Measured on a
2-core CPU (8 epochs of 800 clips, batch 8, 800 steps): fixed 100%, random 23%, distractors 15%
(chance 20%; 21% in a first version, and with a toy LLM of rope_theta 1e4). With ``--epochs 24``
(2,400 steps, 2.5 min) distractors reach 96%: picking one token among several colored ones is
learnable, it takes the from-scratch 2-layer LLM three times the steps of reading a lone one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np

from hicom_plugin.tools import demo
from llava.toy.synthetic import COLORS, EVAL_TASK_FILE, EVAL_VIDEO_DIR, multiple_choice_record
from llava.video import write_video

QUESTION = "What color is the triangle?"


PLACES = ("fixed", "random", "distractors")
FIXED = (3, 3)  # the top-left cell of the (4,3,3) group at rows/columns 3-5


def square_clip(rng: random.Random, color: str, place: str, frames: int = 8, size: int = 56, cell: int = 8):
    clip = np.full((frames, size, size, 3), 128, np.uint8)
    cells = size // cell

    def paint(row: int, col: int, name: str) -> None:
        clip[:, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = COLORS[name]

    paint(*(FIXED if place != "random" else (rng.randrange(cells), rng.randrange(cells))), color)
    if place == "distractors":  # two other colors, each in a cell outside the asked square's group
        outside = [(r, c) for r in range(cells) for c in range(cells)
                   if not (FIXED[0] <= r < FIXED[0] + 3 and FIXED[1] <= c < FIXED[1] + 3)]
        for other, spot in zip(rng.sample([c for c in COLORS if c != color], 2), rng.sample(outside, 2)):
            paint(*spot, other)
    return clip


def make_data(out: Path, place: str, train: int, held_out: int, seed: int = 0) -> None:
    rng, options = random.Random(seed), tuple(COLORS)
    videos, eval_videos = out / "videos", out / "eval" / "video" / EVAL_VIDEO_DIR
    for folder in (videos, eval_videos, out / "eval" / "json"):
        folder.mkdir(parents=True, exist_ok=True)
    records, items = [], []
    for index in range(train):
        color = rng.choice(options)
        write_video(videos / f"v{index}.mp4", square_clip(rng, color, place), fps=8)
        records.append(multiple_choice_record(str(index), f"videos/v{index}.mp4", QUESTION, color, options))
    for index in range(held_out):
        color = rng.choice(options)
        write_video(eval_videos / f"e{index}.mp4", square_clip(rng, color, place), fps=8)
        items.append({"video": f"e{index}.mp4", "question": QUESTION, "candidates": list(options), "answer": color,
                      "at_group_centre": False})
    (out / "stage3_mcqa.json").write_text(json.dumps(records))  # the demo's stage-3 file
    (out / "eval" / "json" / EVAL_TASK_FILE).write_text(json.dumps(items))


def run(out: Path, tiny: Path, place: str, epochs: int, train: int, held_out: int) -> dict:
    from llava.train.train import train as train_stage

    data, run_dir = out / place / "data", out / place / "run"
    for folder in (data, run_dir):
        if folder.exists():
            shutil.rmtree(folder)
    make_data(data, place, train, held_out)
    row, budget = demo.ROWS[0], demo.Budget(epochs=(1, 1, epochs))
    job = {"row": row.name, "seed": 0, "data": str(data), "tiny": str(tiny), "budget": dataclasses.asdict(budget)}
    argv = demo.stage_command(job, run_dir, 3, alone=True)  # the projector starts from scratch
    started = time.perf_counter()
    trainer = train_stage(argv=argv)
    result = demo.evaluate(run_dir / "stage3", data, run_dir / "eval", budget.num_frames)
    return {"place": place, "steps": trainer.state.global_step, "accuracy": result["accuracy"],
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="playground/demo_control")
    parser.add_argument("--tiny", default="playground/tiny")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--places", nargs="+", default=list(PLACES), choices=PLACES)
    args = parser.parse_args(argv)
    from llava.toy.tiny import make_all
    from llava.toy.tiny_lit import make_lit_siglip

    make_all(Path(args.tiny))
    make_lit_siglip(Path(args.tiny))  # the demo's vision tower
    results = [run(Path(args.out), Path(args.tiny), place, args.epochs, args.train, args.held_out)
               for place in args.places]
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"{r['place']:>6}: {r['accuracy']:.1f}% after {r['steps']} steps ({r['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
