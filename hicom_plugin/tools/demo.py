"""The embedded default: the paper's Table 4 ablation at toy scale, end to end on a CPU.

    python -m hicom_plugin.tools.demo --out playground/demo               # one seed (make demo)
    python -m hicom_plugin.tools.demo --out playground/demo --seeds 0 1 2 # mean +- std over 3 seeds

1. tiny offline checkpoints (``llava.toy.tiny``: SigLIP with vision and text towers, Qwen2 with a
   byte-level BPE tokenizer) under ``--tiny``, and the SigLIP whose text tower is LiT-tuned on the
   synthetic tiles (``llava.toy.tiny_lit``), the vision tower of every run;
2. the synthetic instruction-dependent video QA set (``llava.toy.synthetic``) under ``OUT/data``:
   training annotations for the three stages and a held-out MVBench-layout multiple-choice set;
3. for every row of :data:`ROWS` (over :data:`PRESET`) and every seed, the three HICom stages with
   the real trainer, with the flags of ``scripts/train/tiny/stage*.sh`` (asked from the scripts with
   ``LAUNCHER=print``, then trained in-process, one process per core), the same budget for every row;
4. evaluation with ``llava.eval.model_video_mcqa`` + ``llava.eval.eval_video_mcqa`` (MVBench);
5. ``OUT/results.json`` (rows ``{"name", "tokens", "acc_mean", "acc_std", "seeds"}``),
   ``OUT/results.md``, ``OUT/runs.json`` (every run: losses, subsets, seconds), and the figures
   ``OUT/ablation.png`` and ``OUT/attention.png`` (:mod:`hicom_plugin.tools.figures`).

Runs are cached: a run whose ``done.json`` matches its settings is not trained again, so a second
call only re-reads results (``--fresh`` retrains). Each run's output goes to ``OUT/runs/ROW/seedN/run.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from llava.toy.tiny_lit import LIT_DIRNAME

logger = logging.getLogger("hicom_plugin.tools.demo")

REPO = Path(__file__).resolve().parents[2]
STAGE_SCRIPTS = ("stage1_align.sh", "stage2_conditional_pretrain.sh", "stage3_instruction_tuning.sh")
GLOBAL_QUERIES = 2  # global tokens at toy scale: 18 local + 2 global, as the paper's 648 + 32 is "about" 648
# The compressor as the authors' code computes it: the local keys are SigLIP's dense embeddings and the
# instruction's embedding is added to the queries as it is, so SigLIP's image-text alignment selects
# the named tile from the first step. Under the "paper" preset (keys = features, an MLP maps the
# instruction) every row stays near chance at this budget (README). Groups are padded, not
# overlapped, so the (4,3,3) groups are the synthetic scenes' 3x3 blocks.
PRESET = "release"


@dataclass(frozen=True)
class Row:
    """One row of the ablation: a HICom compressor (``overrides`` of :data:`PRESET`) or, with
    ``overrides=None``, OneVision's projector (``flags``)."""

    name: str
    label: str
    overrides: dict | None
    flags: tuple[str, ...] = ()

    def stage_overrides(self, stage: int) -> dict | None:
        """Stage 1 (alignment) trains every compressor without its injection, as the paper does."""
        if self.overrides is None or stage != 1:
            return self.overrides
        return {**self.overrides, "local_injection": "none", "global_injection": "none"}


def _hicom(local_kernel, global_queries: int, local: str, global_: str, **extra) -> dict:
    return {"local_kernel": local_kernel, "num_global_queries": global_queries, "local_injection": local,
            "global_injection": global_, "group_scheme": "pad", **extra}


ROWS = (
    Row("avgpool_433", "avg pool (4,3,3)", _hicom([4, 3, 3], 0, "none", "none", local_mode="average",
                                                         dense_keys=False)),
    Row("uncond_local", "local (4,3,3), unconditional", _hicom([4, 3, 3], 0, "none", "none")),
    Row("cond_local", "local (4,3,3), conditional", _hicom([4, 3, 3], 0, "direct", "none")),
    Row("cond_global", "global only, conditional", _hicom(None, GLOBAL_QUERIES, "none", "coarse")),
    Row("cond_local_global", "local+global, conditional (paper)", _hicom([4, 3, 3], GLOBAL_QUERIES, "direct", "coarse")),
    Row("onevision_2x2", "OneVision 2x2 pool + MLP", None,
        ("--mm_projector_type", "mlp2x_gelu", "--mm_spatial_pool_stride", "2", "--mm_spatial_pool_mode", "bilinear")),
)
ROW_NAMES = tuple(row.name for row in ROWS)


@dataclass(frozen=True)
class Budget:
    """Data and training of every run; the same for every row."""

    train_videos: int = 400
    images: int = 200
    eval_videos: int = 200
    video_frames: int = 24  # 3 s at 8 fps
    fps: int = 8
    num_frames: int = 8  # sampled per video, as the paper's 8f ablation row
    epochs: tuple[int, int, int] = (1, 1, 8)
    batch: tuple[int, int, int] = (16, 16, 8)
    learning_rates: tuple[float, float, float] = (1e-3, 1e-3, 2e-3)
    injector_lr: float = 1e-2  # stage 2: the injection modules (the paper's 10x the compressor's)
    # stage 3: the projector at half the LLM's rate. At 10x (2e-2) whether the from-scratch LLM ever
    # started reading the visual tokens was a matter of the seed; at 1e-3 every conditional-local run
    # of the three seeds did (README; benchmarks/demo_stage3_curves.py measures the rates).
    projector_lr: float = 1e-3
    max_steps: int = 0  # 0: the epochs decide
    data_seed: int = 0
    lit_steps: int = 800  # the tiny SigLIP's text tower, tuned on the tiles (llava.toy.tiny_lit)

    def dataset_args(self) -> dict:
        return dict(seed=self.data_seed, videos=self.train_videos, images=self.images, frames=self.video_frames,
                    fps=self.fps, eval_videos=self.eval_videos)


PROFILES = {
    "default": Budget(),
    # a smoke run of the whole pipeline (tests): a few samples, 2 optimizer steps per stage
    "quick": Budget(train_videos=6, images=4, eval_videos=6, video_frames=8, epochs=(1, 1, 1), batch=(4, 4, 4),
                   max_steps=2, lit_steps=4),
}


def _fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- data and checkpoints -----------------------------------------------------------------------


def dataset_stamp(budget: Budget) -> dict:
    """What the synthetic set is a function of: the generator's version and its arguments."""
    from llava.toy.synthetic import GENERATOR_VERSION

    return {"generator_version": GENERATOR_VERSION, **budget.dataset_args()}


def prepare_data(folder: Path, budget: Budget) -> dict[str, Path]:
    """The synthetic set, written again only when the generator or its arguments changed."""
    from llava.toy.synthetic import make_dataset

    stamp, wanted = folder / "dataset.json", dataset_stamp(budget)
    names = {"stage1": "stage1.json", "stage2": "stage2.json", "stage3": "stage3.json",
             "stage3_mcqa": "stage3_mcqa.json", "eval_questions": "eval/json", "eval_videos": "eval/video"}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return {key: folder / name for key, name in names.items()}
    if folder.exists():
        shutil.rmtree(folder)
    files = make_dataset(folder, **budget.dataset_args())
    stamp.write_text(json.dumps(wanted))
    return files


# ---- one run: three stages and the evaluation (in a worker process) -----------------------------


def stage_argv(stage: int, env: dict[str, str], extra: list[str]) -> list[str]:
    """The train_mem.py flags the tiny stage script would launch with (``LAUNCHER=print``)."""
    script = REPO / "scripts" / "train" / "tiny" / STAGE_SCRIPTS[stage - 1]
    result = subprocess.run(["bash", str(script), *extra], cwd=REPO, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed ({result.returncode}): {result.stderr.decode(errors='replace')[-2000:]}")
    words = shlex.split(result.stdout.decode())
    if len(words) < 2 or not words[1].endswith("train_mem.py"):
        raise RuntimeError(f"{script} with LAUNCHER=print printed no train_mem.py command: {words[:3]}")
    return words[2:]


def _stage_env(job: dict, run_dir: Path) -> dict[str, str]:
    budget = Budget(**job["budget"])
    data, tiny = Path(job["data"]), Path(job["tiny"])
    env = dict(os.environ)
    env.update(
        LAUNCHER="print", NUM_GPUS="1", DS_CONFIG="", TINY=str(tiny), VISION=str(tiny / LIT_DIRNAME),
        FOLDER=str(data), OUT=str(run_dir),
        STAGE1_DATA=str(data / "stage1.json"), STAGE2_DATA=str(data / "stage2.json"),
        STAGE3_DATA=str(data / "stage3_mcqa.json"), PRESET=PRESET, FRAMES=str(budget.num_frames),
        RUN_NAME=f"demo-{job['row']}-seed{job['seed']}", REPORT_TO="none", WORKERS="0", WARMUP_RATIO="0",
        STAGE2_INJECTOR_LR=str(budget.injector_lr), EXTRA="",
    )
    for stage, lr, batch in zip((1, 2, 3), budget.learning_rates, budget.batch):
        env.update({f"STAGE{stage}_LR": str(lr), f"STAGE{stage}_BATCH": str(batch), f"STAGE{stage}_PER_DEVICE": str(batch)})
    return env


def stage_command(job: dict, run_dir: Path, stage: int, alone: bool = False) -> list[str]:
    """The train_mem.py flags of one stage of one run (``job``: row, seed, data, tiny, budget).

    ``alone``: without the previous stage's projector (``--pretrain_mm_mlp_adapter``), which then
    starts from its initialisation; for measurements of one stage on its own (``benchmarks``).
    """
    row, budget = _row(job["row"]), Budget(**job["budget"])
    argv = stage_argv(stage, _stage_env(job, run_dir), _stage_extra(row, stage, budget, job["seed"]))
    if alone and "--pretrain_mm_mlp_adapter" in argv:
        at = argv.index("--pretrain_mm_mlp_adapter")
        del argv[at : at + 2]
    return argv


def _row(name: str) -> Row:
    return next(row for row in ROWS if row.name == name)


def _stage_extra(row: Row, stage: int, budget: Budget, seed: int) -> list[str]:
    extra = ["--num_train_epochs", str(budget.epochs[stage - 1]), "--seed", str(seed), "--data_seed", str(seed),
             "--gradient_checkpointing", "False", "--save_strategy", "no", "--disable_tqdm", "True",
             "--logging_steps", "5", *row.flags]
    if stage == 3:
        extra += ["--mm_projector_lr", str(budget.projector_lr)]
    if budget.max_steps:
        extra += ["--max_steps", str(budget.max_steps)]
    overrides = row.stage_overrides(stage)
    if overrides is not None:
        extra += ["--hicom_overrides", json.dumps(overrides, separators=(",", ":"))]
    return extra


def _progress_callback(queue, key: str, unit: int):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            queue.put((key, unit, state.global_step / max(state.max_steps, 1)))

    return Progress()


_QUEUE = None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this worker SIGTERM when the demo process ends, however it ends, so
    a killed demo leaves no run training in the background (Ctrl-C reaches the whole group anyway)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive a killed demo",
                       ctypes.get_errno())
    elif os.getppid() != parent:  # the demo ended before the guard was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(queue, threads: int, parent: int | None = None) -> None:
    global _QUEUE
    _QUEUE = queue
    if parent is not None:
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _Redirect:
    """Sends this process's stdout and stderr (file descriptors included) to ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self.file = open(self.path, "a")
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        root = logging.getLogger()
        self.handlers = root.handlers[:]
        root.handlers = [logging.StreamHandler(self.file)]
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        logging.getLogger().handlers = self.handlers
        self.file.close()
        return False


def run_one(job: dict) -> dict:
    """Trains the three stages of one (row, seed) and evaluates the result; returns its record."""
    run_dir = Path(job["run_dir"])
    done = run_dir / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("fingerprint") == job["fingerprint"]:
            _report(job["key"], 4, 1.0)
            return record
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    with _Redirect(run_dir / "run.log"):
        try:
            record = _train_and_evaluate(job, run_dir)
        except BaseException:
            traceback.print_exc()  # into run.log: the parent only sees the exception's repr
            raise
    done.write_text(json.dumps(record, indent=1))
    return record


def _report(key: str, unit: int, fraction: float) -> None:
    if _QUEUE is not None:
        _QUEUE.put((key, unit, fraction))


def _train_and_evaluate(job: dict, run_dir: Path) -> dict:
    from llava.train.train import train

    row, budget, seed = _row(job["row"]), Budget(**job["budget"]), job["seed"]
    started = time.perf_counter()
    record = {"row": row.name, "seed": seed, "fingerprint": job["fingerprint"], "stages": {}}
    tokens = None
    for stage in (1, 2, 3):
        argv = stage_command(job, run_dir, stage)
        stage_start = time.perf_counter()
        callbacks = [_progress_callback(_QUEUE, job["key"], stage - 1)] if _QUEUE is not None else None
        trainer = train(argv=argv, callbacks=callbacks)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        record["stages"][stage] = {"steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
                                   "last_loss": losses[-1] if losses else None,
                                   "seconds": round(time.perf_counter() - stage_start, 1)}
        if stage == 3:
            tokens = trainer.model.num_visual_tokens(budget.num_frames, "video")
        del trainer
        gc.collect()
        _report(job["key"], stage - 1, 1.0)
    record["tokens"] = tokens
    record.update(evaluate(run_dir / "stage3", Path(job["data"]), run_dir / "eval", budget.num_frames))
    _report(job["key"], 3, 1.0)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def evaluate(model_dir: Path, data: Path, out: Path, num_frames: int) -> dict:
    """MVBench-format inference and scoring with ``llava.eval``; accuracy overall and by where the
    asked object sits in its group."""
    from llava.eval import eval_video_mcqa, model_video_mcqa
    from llava.eval.questions import LETTERS
    from llava.toy.synthetic import EVAL_TASK_FILE

    out.mkdir(parents=True, exist_ok=True)
    questions = ["--benchmark", "mvbench", "--question-file", str(data / "eval" / "json")]
    answers, report_path = out / "answers.jsonl", out / "report.json"
    status = model_video_mcqa.main([*questions, "--model-path", str(model_dir), "--video-folder",
                                    str(data / "eval" / "video"), "--answers-file", str(answers),
                                    "--num-frames", str(num_frames), "--torch-dtype", "float32"])
    if status:
        raise RuntimeError(f"llava.eval.model_video_mcqa exited with {status} (see the run log)")
    status = eval_video_mcqa.main([*questions, "--answers-file", str(answers), "--report", str(report_path)])
    if status:
        raise RuntimeError(f"llava.eval.eval_video_mcqa exited with {status} (see the run log)")
    report = json.loads(report_path.read_text())
    items = json.loads((data / "eval" / "json" / EVAL_TASK_FILE).read_text())
    stem = Path(EVAL_TASK_FILE).stem
    # every question counts: an empty or unreadable reply is a wrong answer here
    correct = [report["letters"].get(f"{stem}/{index}") == LETTERS[item["candidates"].index(item["answer"])]
               for index, item in enumerate(items)]
    by_place = {"group_centre": [c for c, item in zip(correct, items) if item["at_group_centre"]],
                "off_centre": [c for c, item in zip(correct, items) if not item["at_group_centre"]]}
    return {
        "accuracy": 100.0 * sum(correct) / len(correct), "questions": len(correct),
        "parse_failures": report["parse_failures"], "empty_replies": report["empty_replies"],
        "accuracy_by_place": {k: (100.0 * sum(v) / len(v) if v else None) for k, v in by_place.items()},
    }


# ---- the whole ablation ---------------------------------------------------------------------------


def aggregate(records: list[dict]) -> list[dict]:
    """``results.json`` rows, in :data:`ROWS` order."""
    rows = []
    for row in ROWS:
        runs = sorted((r for r in records if r["row"] == row.name), key=lambda r: r["seed"])
        if not runs:
            continue
        accuracies = [r["accuracy"] for r in runs]
        rows.append({
            "name": row.name,
            "tokens": runs[0]["tokens"],
            "acc_mean": round(statistics.fmean(accuracies), 2),
            "acc_std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else 0.0,
            "seeds": [r["seed"] for r in runs],
        })
    return rows


def format_table(rows: list[dict], records: list[dict]) -> str:
    labels = {row.name: row.label for row in ROWS}
    lines = ["| row | method | visual tokens / video | accuracy % (mean ± std) | seeds | off-centre acc % |",
             "|---|---|---:|---:|---|---:|"]
    for row in rows:
        off = [r["accuracy_by_place"]["off_centre"] for r in records if r["row"] == row["name"]
               and r["accuracy_by_place"]["off_centre"] is not None]
        off_text = f"{statistics.fmean(off):.1f}" if off else "n/a"
        lines.append(f"| `{row['name']}` | {labels[row['name']]} | {row['tokens']} | "
                     f"{row['acc_mean']:.1f} ± {row['acc_std']:.1f} | {','.join(map(str, row['seeds']))} | {off_text} |")
    return "\n".join(lines)


def run_ablation(out: Path, tiny: Path, budget: Budget, seeds: list[int], rows: list[str], workers: int,
                 fresh: bool = False, figures: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    from llava.toy.tiny import make_all
    from llava.toy.tiny_lit import RECORD_NAME, LitSettings, make_lit_siglip

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"[1/4] tiny checkpoints under {tiny} (SigLIP's text tower tuned on the tiles: {budget.lit_steps} steps)",
          flush=True)
    make_all(tiny)
    lit = make_lit_siglip(tiny, LitSettings(steps=budget.lit_steps), progress=True)
    lit_record = json.loads((lit / RECORD_NAME).read_text())
    print(f"[2/4] synthetic data under {out / 'data'}", flush=True)
    data_files = prepare_data(out / "data", budget)
    data_fp = _fingerprint(dataset_stamp(budget))
    jobs = []
    for name in rows:
        row = _row(name)
        for seed in seeds:
            run_dir = out / "runs" / name / f"seed{seed}"
            if fresh and run_dir.exists():
                shutil.rmtree(run_dir)
            fingerprint = _fingerprint([dataclasses.asdict(row), dataclasses.asdict(budget), seed, data_fp,
                                        lit_record["version"], lit_record["settings"]])
            jobs.append({"key": f"{name}/seed{seed}", "row": name, "seed": seed, "run_dir": str(run_dir),
                         "data": str(out / "data"), "tiny": str(tiny), "budget": dataclasses.asdict(budget),
                         "fingerprint": fingerprint})
    # the runs with the most visual tokens take longest: start them first
    jobs.sort(key=lambda j: _row(j["row"]).overrides is not None)
    print(f"[3/4] {len(jobs)} runs ({len(rows)} rows x {len(seeds)} seeds), 3 stages + eval each, "
          f"{workers} worker(s); logs in {out / 'runs'}/ROW/seedN/run.log", flush=True)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    progress: dict[tuple[str, int], float] = {}
    records, failures = [], []
    active: dict[str, str] = {}  # run -> what it is doing
    with tqdm(total=4 * len(jobs), unit="stage", bar_format="{l_bar}{bar}| {n:.1f}/{total} stages "
              "[{elapsed}<{remaining}]{postfix}") as bar, \
            ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                initargs=(queue, threads, os.getpid())) as pool:
        pending = {pool.submit(run_one, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while not queue.empty():
                key, unit, fraction = queue.get()
                if unit == 4:  # a cached run
                    progress.update({(key, u): 1.0 for u in range(4)})
                else:
                    progress[(key, unit)] = max(progress.get((key, unit), 0.0), fraction)
                    now = unit + (fraction >= 1)  # the unit under way: stages 0-2, eval 3, done 4
                    active[key] = ("stage 1", "stage 2", "stage 3", "eval", "done")[now]
            for future in done:
                job = pending.pop(future)
                active.pop(job["key"], None)
                try:
                    records.append(future.result())
                except Exception as err:  # reported after the others finish
                    failures.append((job, err))
                progress.update({(job["key"], u): 1.0 for u in range(4)})
            bar.n = sum(progress.values())
            bar.set_postfix_str(", ".join(f"{k}: {v}" for k, v in sorted(active.items()) if v != "done"), refresh=False)
            bar.refresh()
    if failures:
        for job, err in failures:
            print(f"run {job['key']} failed: {err!r}; log: {Path(job['run_dir']) / 'run.log'}", file=sys.stderr)
        raise SystemExit(1)

    print("[4/4] results", flush=True)
    from llava.toy.synthetic import COLORS

    rows_out = aggregate(records)
    (out / "results.json").write_text(json.dumps(rows_out, indent=1) + "\n")
    (out / "runs.json").write_text(json.dumps(sorted(records, key=lambda r: (r["row"], r["seed"])), indent=1) + "\n")
    table = format_table(rows_out, records)
    elapsed = time.perf_counter() - started
    (out / "results.md").write_text(
        f"{table}\n\n{len(records)} runs; eval: {records[0]['questions']} held-out MVBench-format questions "
        f"(chance {100 / len(COLORS):.0f}%); wall time {elapsed:.0f} s\n")
    print(table)
    if figures:
        from hicom_plugin.tools.figures import ablation_chart, attention_figure

        ablation_chart(rows_out, {row.name: row.label for row in ROWS}, out / "ablation.png", chance=100 / len(COLORS))
        first = min(seeds)
        models = {name: out / "runs" / name / f"seed{first}" / "stage3" for name in ("uncond_local", "cond_local_global")
                  if name in rows}
        if "cond_local_global" in models:
            attention_figure(models, data_files["eval_questions"], data_files["eval_videos"], out / "attention.png",
                             num_frames=budget.num_frames)
        print(f"figures: {out / 'ablation.png'}" + (f", {out / 'attention.png'}" if "cond_local_global" in models else ""))
    print(f"results: {out / 'results.json'} ({elapsed:.0f} s)")
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hicom_plugin.tools.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="playground/demo", help="folder of the runs, tables and figures")
    parser.add_argument("--tiny", default="playground/tiny", help="tiny checkpoints (built when missing)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="budget of data and training: default, or quick (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per row and seed")
    parser.add_argument("--rows", nargs="+", default=list(ROW_NAMES), choices=ROW_NAMES, help="the rows to run (default: all)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs trained side by side (one process each)")
    parser.add_argument("--fresh", action="store_true", help="retrain runs even when their results are cached")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_ablation(Path(args.out), Path(args.tiny), PROFILES[args.profile], sorted(set(args.seeds)), args.rows,
                 args.workers, fresh=args.fresh, figures=args.figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
