"""Stage-3 learning curves of one embedded-default row: held-out letter accuracy against steps.

    python -m benchmarks.demo_stage3_curves [--row cond_local_global] [--projector-lr 2e-2 2e-3 1e-3]
        [--seeds 0 1 2] [--steps 1000] [--every 200] [--workers 2] [--data playground/demo/data] [--tiny playground/tiny]

The toy LLM of the embedded default (``hicom_plugin.tools.demo``) is trained from scratch; it first
learns to give one letter to every question and leaves that plateau when it starts reading the
visual tokens, at a step that depends on the seed. This measures when, per projector learning rate
and seed: stage 3 of ``--row`` alone (the demo's flags, without stage 2's projector), with the
demo's batch, LLM rate, cosine schedule and no warmup, on the demo's training turns held in memory
(decoded once), scored every ``--every`` steps by teacher-forced accuracy of the answer letter on
the held-out MVBench-format questions. Needs the demo's data and tiny checkpoints (``make demo``).

Measured on a 2-core CPU (cond_local_global, 1,000 steps, seeds 0, 1, 2, held-out % at step 1,000;
9 runs, 2 workers, about 9 minutes): projector 2e-2: 18.5, 58.5, 18.5; 2e-3: 67.0, 44.5, 68.5;
1e-3: 48.0, 39.0, 24.0. Every run is a fresh process, so its numbers do not depend on the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from hicom_plugin.tools import demo
from llava.toy.synthetic import COLORS, EVAL_TASK_FILE, EVAL_VIDEO_DIR, multiple_choice_record
from llava.toy.tiny_lit import LIT_DIRNAME

LETTERS = "ABCDE"


def held_out_turns(data: Path) -> list[dict]:
    """The held-out questions as training-format turns (the answer is what is scored)."""
    options = tuple(COLORS)
    items = json.loads((data / "eval" / "json" / EVAL_TASK_FILE).read_text())
    return [multiple_choice_record(f"held_out_{i}", f"eval/video/{EVAL_VIDEO_DIR}/{item['video']}", item["question"],
                                   item["answer"], options) for i, item in enumerate(items)]


def letter_accuracy(model, collator, items: list[dict], letter_ids: list[int], batch: int = 16) -> float:
    """Teacher-forced: is the answer's letter the likeliest of the five where the model predicts it?"""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(items), batch):
            inputs = collator(items[start : start + batch])
            inputs.pop("data_events", None)
            labels = inputs.pop("labels")
            logits = model(**inputs).logits
            shift = logits.shape[1] - labels.shape[1]  # the visual tokens expand every sequence alike
            for row in range(labels.shape[0]):
                for position in (labels[row] != -100).nonzero().flatten().tolist():
                    if labels[row, position].item() in letter_ids:
                        scores = logits[row, position - 1 + shift, letter_ids]
                        correct += letter_ids[scores.argmax().item()] == labels[row, position].item()
                        break
    model.train()
    return 100 * correct / len(items)


def curve(job: dict, projector_lr: float, steps: int, every: int, work: Path) -> list[dict]:
    from llava.train.arguments import parse_args
    from llava.train.train import build_data_module, build_training_model

    budget = demo.Budget(**job["budget"])
    argv = demo.stage_command(job, work / "run", 3, alone=True)
    model_args, data_args, training_args = parse_args(argv)
    torch.manual_seed(job["seed"])
    model, tokenizer = build_training_model(model_args, data_args, training_args)
    train_module = build_data_module(model, tokenizer, model_args, data_args, training_args)
    train_set, collator = train_module["train_dataset"], train_module["data_collator"]
    train_items = [train_set[i] for i in range(len(train_set))]
    held_out = work / "held_out.json"
    held_out.write_text(json.dumps(held_out_turns(Path(job["data"]))))
    data_args.data_path = str(held_out)
    held_out_set = build_data_module(model, tokenizer, model_args, data_args, training_args)["train_dataset"]
    held_out_items = [held_out_set[i] for i in range(len(held_out_set))]
    letter_ids = tokenizer.convert_tokens_to_ids(list(LETTERS))

    projector = [p for n, p in model.named_parameters() if p.requires_grad and "mm_projector" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "mm_projector" not in n]
    base = [training_args.learning_rate, projector_lr]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": base[0]}, {"params": projector, "lr": base[1]}],
                                  weight_decay=training_args.weight_decay)
    order_rng, order, points, losses = random.Random(job["seed"]), [], [], []
    batch, started = budget.batch[2], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch:
            order += order_rng.sample(range(len(train_items)), len(train_items))
        chosen, order = order[:batch], order[batch:]
        inputs = collator([train_items[i] for i in chosen])
        inputs.pop("data_events", None)
        factor = 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine to 0, as the trainer's schedule
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * factor
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            point = {"step": step, "loss": round(sum(losses) / len(losses), 4),
                     "held_out": letter_accuracy(model, collator, held_out_items, letter_ids),
                     "seconds": round(time.perf_counter() - started, 1)}
            losses = []
            points.append(point)
            print(f"  step {step}: loss {point['loss']:.3f}, held-out {point['held_out']:.1f}%", flush=True)
    return points


def _run(run: tuple[dict, float, int, int]) -> list[dict]:
    job, projector_lr, steps, every = run
    torch.set_num_threads(1)
    print(f"{job['row']}, projector lr {projector_lr:g}, seed {job['seed']}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        return curve(job, projector_lr, steps, every, Path(work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", default="cond_local_global", choices=demo.ROW_NAMES)
    parser.add_argument("--projector-lr", type=float, nargs="+", default=[2e-2, 2e-3, 1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--data", default="playground/demo/data", help="the demo's synthetic set")
    parser.add_argument("--tiny", default="playground/tiny", help="the tiny checkpoints and the LiT tower")
    parser.add_argument("--out", default="playground/demo/stage3_curves.json")
    args = parser.parse_args(argv)
    for needed in (Path(args.data) / "stage3_mcqa.json", Path(args.tiny) / LIT_DIRNAME):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run `make demo` first")
    budget = dataclasses.asdict(demo.PROFILES["default"])
    runs = [({"row": args.row, "seed": seed, "data": str(Path(args.data).resolve()),
              "tiny": str(Path(args.tiny).resolve()), "budget": budget}, projector_lr, args.steps, args.every)
            for projector_lr in args.projector_lr for seed in args.seeds]
    # One fresh process per run: a run's numbers must not depend on what ran before it in the process.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=spawn, max_tasks_per_child=1) as pool:
        curves = list(pool.map(_run, runs))
    results = [{"row": args.row, "projector_lr": run[1], "seed": run[0]["seed"], "curve": points}
               for run, points in zip(runs, curves)]
    for result in results:
        final = result["curve"][-1]
        print(f"projector lr {result['projector_lr']:g}, seed {result['seed']}: step {final['step']}, "
              f"loss {final['loss']:.3f}, held-out {final['held_out']:.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"curves: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
