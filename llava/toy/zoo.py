"""The embedded default: every method's toy row, trained alike, measured by the comparison harness.

    python -m llava.toy.zoo --out playground/demo                         # the headline rows, seed 0 (make demo)
    python -m llava.toy.zoo --out playground/demo --subset all --seeds 0 1 2   # every row (make demo-zoo)

The rows come from the plugins (:class:`llava.plugin.ToyRow`, ``Plugin.toy_rows``) and from the core,
which declares OneVision's two rows: the uncompressed reference (its MLP on every patch) and its 2x2
video pooling; this driver names no method. For every seed:

1. shared starts, made once and cached (:mod:`llava.toy.tiny`): tiny SigLIP and Qwen2 checkpoints, the
   SigLIP whose text tower is LiT-tuned on the tiles (:mod:`llava.toy.tiny_lit`, every row's vision
   tower), and the Qwen2 pre-trained on scenes of tiles (:mod:`llava.toy.tiny_pretrain`, every row's
   LLM start);
2. the synthetic instruction-dependent video QA set (:mod:`llava.toy.synthetic`), the same for every
   row: training annotations and a held-out MVBench-layout multiple-choice set;
3. every trained row: its method's own tiny stage scripts (asked with ``LAUNCHER=print``, then trained
   in-process, one process per core). The last stage, instruction tuning with the LLM unfrozen, gets
   the same data (the benchmark-format questions), epochs, batch, learning rates and seed in every row;
   earlier stages are each method's adapter stages on its recipe's data, one epoch each;
4. the comparison harness (:mod:`llava.eval.compare`) on the held-out set: the reference, every
   trained row at its own token count, and every training-free reducer row on the reference's
   checkpoint at the shared budget (:data:`Budget.tokens`); its ``results.jsonl`` gives accuracy,
   visual tokens and FLOPs per row;
5. ``OUT/results.json`` / ``OUT/results.md``: per row, mean +- std over the seeds of the harness's
   accuracy, with tokens and FLOPs; ``OUT/pareto.png`` (accuracy against visual tokens, the front
   marked) and ``OUT/accuracy.png`` (bars with the spread); ``OUT/pictures/ROW.png``: what each method
   attends to or selects under two instructions on the same eval videos.

Runs are cached: a run (or a seed's harness pass) whose record matches its settings is not redone
(``--fresh`` redoes them). Logs: ``OUT/runs/ROW/seedN/run.log`` per run, ``OUT/compare/seedN/shardK.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import importlib
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

import yaml

from llava.plugin import ToyClip, ToyRow, ToyStage
from llava.video import load_video_frames

logger = logging.getLogger("llava.toy.zoo")

REPO = Path(__file__).resolve().parents[2]

_ONEVISION_STAGES = tuple(ToyStage(f"scripts/train/onevision/tiny/{name}.sh")
                          for name in ("stage1_align", "stage2_knowledge", "stage3_instruction_tuning"))
#: The core's own rows. The reference, every other row's yardstick, is OneVision's MLP on every patch
#: (its image path, ``--mm_spatial_pool_stride 1``: 8 x 49 = 392 tokens). OneVision's video path pools
#: 2 x 2 (bilinear, 7 -> 4 a side): on the toy's one-patch tiles that is already a lossy compressor (a
#: tile's largest weight in a pooled token has median 0.23, and a quarter of the tiles fall under 0.11),
#: so it is a row of its own, trained alike.
REFERENCE = ToyRow(
    name="onevision", label="OneVision: MLP on every patch, uncompressed (reference)", methods=("mlp2x_gelu",),
    stages=_ONEVISION_STAGES, env={"POOL_STRIDE": "1"}, headline=True, reference=True)
ONEVISION_POOLED = ToyRow(
    name="onevision_pool2", label="OneVision's video pooling: 2x2 bilinear + MLP", methods=("mlp2x_gelu",),
    stages=_ONEVISION_STAGES, env={"POOL_STRIDE": "2"})


@dataclass(frozen=True)
class Budget:
    """Data and training of every row; the same for all of them."""

    train_videos: int = 800
    images: int = 200
    eval_videos: int = 200
    video_frames: int = 24  # 3 s at 8 fps
    fps: int = 8
    num_frames: int = 8  # sampled per video
    tokens: int = 20  # the training-free reducers' budget: 5.1% of the reference's 392, the trained rows' count
    adapter_batch: int = 16  # the adapter stages
    adapter_epochs: int = 1
    epochs: int = 5  # instruction tuning (1,500 steps): 4 left the reference at 58.0 ± 7.1 (README)
    batch: int = 8
    # the pre-trained LLM moves ten times slower than the new visual path (faster, it memorises the
    # training videos: README); the visual path's group is --mm_projector_lr (every method's projector
    # or compressor)
    lr: float = 2e-4
    projector_lr: float = 2e-3
    # every stage; LLaVA's recipes warm up 3%, which at 1,200 steps (4 epochs) left the reference lower
    # (45.0 and 46.5% on seeds 0 and 1, against 60.5 and 50.0 without: README)
    warmup_ratio: float = 0.0
    max_steps: int = 0  # 0: the epochs decide (every stage)
    data_seed: int = 0
    # MiB of decoded frames a run keeps: each training clip (8 x 56 x 56 x 3 bytes; 60 MB for 800) decodes
    # once per run instead of once per question and epoch, a fifth of the reference's stage-3 time
    video_cache_mb: int = 128
    lit_steps: int = 800  # the tiny SigLIP's text tower, tuned on the tiles (llava.toy.tiny_lit)
    # >0: every row starts from the tiny Qwen2 pre-trained this many steps on scenes of two-part tiles
    # (llava.toy.tiny_pretrain); 0: from the random tiny Qwen2, with which the reference stays at chance
    pretrain_steps: int = 1500
    picture_clips: int = 2

    def dataset_args(self) -> dict:
        return dict(seed=self.data_seed, videos=self.train_videos, images=self.images, frames=self.video_frames,
                    fps=self.fps, eval_videos=self.eval_videos)


PROFILES = {
    "default": Budget(),
    # the whole pipeline in the test suite: a few samples, 2 optimizer steps per stage
    "quick": Budget(train_videos=6, images=4, eval_videos=6, video_frames=8, adapter_batch=4, epochs=1, batch=4,
                    max_steps=2, lit_steps=4, pretrain_steps=2, picture_clips=1),
}
SUBSETS = ("headline", "all")


def _fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- rows ------------------------------------------------------------------------------------------


def all_rows() -> list[ToyRow]:
    """The core's rows (the reference first), then every plugin's rows (plugin name order, then declaration order)."""
    from llava.plugin import toy_rows
    from llava.registry import load_plugins

    load_plugins()
    rows = [REFERENCE, ONEVISION_POOLED, *toy_rows()]
    names = [row.name for row in rows]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"toy rows {twice} are declared twice")
    if sum(row.reference for row in rows) != 1:
        raise ValueError(f"exactly one toy row must be the reference, got {[r.name for r in rows if r.reference]}")
    return rows


def registered_methods() -> dict[str, dict[str, object]]:
    """The projectors, vision towers and token reducers that plugin packages registered (those whose
    class comes from a package with an entry point of the plugin host; the core's built-ins are not
    methods of the table): ``{registry: {name: registered value}}``."""
    from importlib.metadata import entry_points

    from llava.model.multimodal_encoder.builder import VISION_TOWERS
    from llava.model.multimodal_projector.builder import PROJECTORS
    from llava.model.token_reduction.registry import TOKEN_REDUCERS
    from llava.registry import ENTRY_POINT_GROUPS, load_plugins

    load_plugins()
    packages = {ep.value.split(":")[0].split(".")[0] for group in ENTRY_POINT_GROUPS
                for ep in entry_points(group=group)} - {"llava"}
    found = {}
    for registry in (PROJECTORS, VISION_TOWERS, TOKEN_REDUCERS):
        values = {name: registry.get(name) for name in registry.names()}
        found[registry.what] = {name: value for name, value in values.items()
                                if getattr(value, "__module__", "").split(".")[0] in packages}
    return found


def rowless_methods(rows: list[ToyRow]) -> list[str]:
    """Registered plugin methods no row shows (``"kind name"``); the table must have none. A name
    registered for the same class as a shown one (another spelling of the method, e.g. a release's
    type strings) counts as shown."""
    shown = {method for row in rows for method in row.methods}
    missing = []
    for kind, entries in registered_methods().items():
        shown_values = [value for name, value in entries.items() if name in shown]
        missing += [f"{kind} {name}" for name, value in entries.items()
                    if name not in shown and not any(value is other for other in shown_values)]
    return missing


def select_rows(rows: list[ToyRow], subset: str, names: list[str] | None) -> list[ToyRow]:
    """``names`` (in table order, the reference always), else the ``subset``."""
    known = {row.name for row in rows}
    if names:
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"unknown toy row(s) {unknown}; rows: {', '.join(sorted(known))}")
        return [row for row in rows if row.name in names or row.reference]
    return [row for row in rows if subset == "all" or row.headline or row.reference]


def _row_identity(row: ToyRow) -> dict:
    """What a run of ``row`` is a function of (the scripts' text included)."""
    scripts = {}
    for stage in row.stages:
        path = REPO / stage.script
        scripts[stage.script] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    return {"name": row.name, "stages": [dataclasses.asdict(s) for s in row.stages], "env": dict(row.env),
            "scripts": scripts}


# ---- data and shared starts ------------------------------------------------------------------------


def dataset_stamp(budget: Budget) -> dict:
    from llava.toy.synthetic import GENERATOR_VERSION

    return {"generator_version": GENERATOR_VERSION, **budget.dataset_args()}


def prepare_data(folder: Path, budget: Budget) -> None:
    """The synthetic set, written again only when the generator or its arguments changed."""
    from llava.toy.synthetic import make_dataset

    stamp, wanted = folder / "dataset.json", dataset_stamp(budget)
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    if folder.exists():
        shutil.rmtree(folder)
    make_dataset(folder, **budget.dataset_args())
    stamp.write_text(json.dumps(wanted))


def pretrain_llm(job: dict) -> str:
    """The shared pre-trained LLM (in a worker, its progress in ``job["log"]``); its folder. It trains on
    every core whatever the number of workers (the LiT tuning and the data beside it are short), so a
    machine builds the same start for any ``--workers``."""
    import torch

    from llava.toy.tiny_pretrain import PretrainSettings, make_pretrained_llm

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return str(_logged(Path(job["log"]), lambda: make_pretrained_llm(
            Path(job["tiny"]), PretrainSettings(steps=job["steps"]), progress=True)))
    finally:  # the worker goes on to train rows on its share of the cores
        torch.set_num_threads(threads)


def shared_starts(pool: "_Pool", tiny: Path, data: Path, budget: Budget) -> dict:
    """The tiny checkpoints, the LiT-tuned SigLIP and the synthetic data (this process), then the
    pre-trained LLM (a worker); returns the folders and their records (which enter every run's
    fingerprint). One after the other: beside the LLM's pre-training on every core, the LiT tuning took
    72 s instead of 15 and slowed the pre-training as much, on 2 cores."""
    from llava.toy.tiny import QWEN2_DIRNAME, make_all
    from llava.toy.tiny_lit import RECORD_NAME as LIT_RECORD
    from llava.toy.tiny_lit import LitSettings, make_lit_siglip
    from llava.toy.tiny_pretrain import RECORD_NAME as LLM_RECORD

    make_all(tiny)
    vision = make_lit_siglip(tiny, LitSettings(steps=budget.lit_steps), progress=True)
    print(f"[2/5] synthetic data under {data}", flush=True)
    prepare_data(data, budget)
    log = tiny / "pretrain.log"
    llm_future = None
    if budget.pretrain_steps:
        llm_future = pool.pool.submit(pretrain_llm, {"tiny": str(tiny), "steps": budget.pretrain_steps,
                                                     "log": str(log)})
    records = {"vision": json.loads((vision / LIT_RECORD).read_text())}
    if llm_future is None:
        llm = tiny / QWEN2_DIRNAME
        records["llm"] = {"version": 0, "settings": "random tiny Qwen2", "source": QWEN2_DIRNAME}
    else:
        if not llm_future.done():
            print(f"      waiting for the LLM's pre-training on scenes of tiles (log: {log})", flush=True)
        try:
            llm = Path(llm_future.result())
        except Exception as err:
            raise SystemExit(f"the LLM's pre-training failed: {err!r}; log: {log}") from err
        records["llm"] = json.loads((llm / LLM_RECORD).read_text())
    return {"vision": str(vision), "llm": str(llm),
            "identity": {k: {"version": r["version"], "settings": r["settings"]} for k, r in records.items()},
            "records": records}


# ---- one run: a row's stages (in a worker process) ------------------------------------------------


def script_argv(script: Path, env: dict[str, str]) -> list[str]:
    """The train_mem.py flags a stage script launches with (``LAUNCHER=print``)."""
    result = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed ({result.returncode}): {result.stderr.decode(errors='replace')[-2000:]}")
    words = shlex.split(result.stdout.decode())
    if len(words) < 2 or not words[1].endswith("train_mem.py"):
        raise RuntimeError(f"{script} with LAUNCHER=print printed no train_mem.py command: {words[:3]}")
    return words[2:]


def stage_env(job: dict) -> dict[str, str]:
    """The settings every method's tiny scripts read, the same for every row, then the row's own."""
    budget, data = Budget(**job["budget"]), Path(job["data"])
    env = dict(os.environ)
    frames = str(budget.num_frames)
    env.update(
        LAUNCHER="print", NUM_GPUS="1", DS_CONFIG="", TINY=job["tiny"], LLM=job["llm"], VISION=job["vision"],
        FOLDER=str(data), OUT=job["run_dir"], FRAMES=frames, FRAMES1=frames, FRAMES2=frames, FRAMES3=frames,
        RUN_NAME=f"zoo-{job['row']}-seed{job['seed']}", REPORT_TO="none", WORKERS="0",
        WARMUP_RATIO=str(budget.warmup_ratio), EXTRA="", MAX_STEPS="",
    )
    env.update(job["env"])
    return env


def budget_flags(budget: Budget, stage: int, stages: int, data: Path, seed: int) -> list[str]:
    """Flags after a stage script's own: every row trains alike. The last stage is the instruction
    tuning (same data, epochs, batch, learning rates); earlier ones are ``adapter_epochs`` of the
    method's adapter stages."""
    flags = ["--num_frames", str(budget.num_frames), "--seed", str(seed), "--data_seed", str(seed),
             "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "False", "--save_strategy", "no",
             "--disable_tqdm", "True", "--logging_steps", "5", "--report_to", "none", "--dataloader_num_workers", "0",
             "--warmup_ratio", str(budget.warmup_ratio), "--video_cache_mb", str(budget.video_cache_mb)]
    if stage == stages:
        flags += ["--data_path", str(data / "stage3_mcqa.json"), "--num_train_epochs", str(budget.epochs),
                  "--per_device_train_batch_size", str(budget.batch), "--learning_rate", str(budget.lr),
                  "--mm_projector_lr", str(budget.projector_lr)]
    else:
        flags += ["--num_train_epochs", str(budget.adapter_epochs), "--per_device_train_batch_size",
                  str(budget.adapter_batch)]
    if budget.max_steps:
        flags += ["--max_steps", str(budget.max_steps)]
    return flags


def stage_command(job: dict, stage: int) -> list[str]:
    """The train_mem.py flags of stage ``stage`` (1-based) of one run."""
    row = ToyRow(**{**job["declaration"], "stages": tuple(ToyStage(s["script"], tuple(s["extra"]))
                                                           for s in job["declaration"]["stages"])})
    spec = row.stages[stage - 1]
    argv = script_argv(REPO / spec.script, stage_env(job))
    return [*argv, *spec.extra, *budget_flags(Budget(**job["budget"]), stage, len(row.stages), Path(job["data"]),
                                              job["seed"])]


def _flag(argv: list[str], name: str) -> str | None:
    """The last value of ``name`` in ``argv`` (argparse's rule: the last one wins)."""
    values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]
    return values[-1] if values else None


def _progress_callback(queue, key: str, unit: int):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            queue.put((key, unit, state.global_step / max(state.max_steps, 1)))

    return Progress()


_QUEUE = None


def _report(key: str, unit: int, fraction: float) -> None:
    if _QUEUE is not None:
        _QUEUE.put((key, unit, fraction))


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this worker SIGTERM when the zoo's process ends, however it ends, so
    a killed run leaves nothing training in the background (Ctrl-C reaches the whole group anyway)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive a killed zoo",
                       ctypes.get_errno())
    elif os.getppid() != parent:  # the zoo ended before the guard was in place
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


def _cached(folder: Path, fingerprint: str) -> dict | None:
    done = folder / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("fingerprint") == fingerprint:
            return record
    return None


def _logged(log: Path, work):
    """Runs ``work()`` with its output in ``log``; the traceback goes there too."""
    with _Redirect(log):
        try:
            return work()
        except BaseException:
            traceback.print_exc()
            raise


def train_run(job: dict) -> dict:
    """Trains every stage of one (row, seed); returns its record (``checkpoint``: the last stage's folder)."""
    run_dir = Path(job["run_dir"])
    record = _cached(run_dir, job["fingerprint"])
    if record is not None:
        _report(job["key"], -1, 1.0)
        return record
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    record = _logged(run_dir / "run.log", lambda: _train_stages(job))
    (run_dir / "done.json").write_text(json.dumps(record, indent=1))
    return record


def _train_stages(job: dict) -> dict:
    from llava.train.train import train

    started = time.perf_counter()
    record = {"row": job["row"], "seed": job["seed"], "fingerprint": job["fingerprint"], "stages": {}}
    stages = len(job["declaration"]["stages"])
    for stage in range(1, stages + 1):
        argv = stage_command(job, stage)
        stage_start = time.perf_counter()
        callbacks = [_progress_callback(_QUEUE, job["key"], stage - 1)] if _QUEUE is not None else None
        trainer = train(argv=argv, callbacks=callbacks)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        record["stages"][stage] = {"output_dir": _flag(argv, "--output_dir"), "steps": trainer.state.global_step,
                                   "first_loss": losses[0] if losses else None,
                                   "last_loss": losses[-1] if losses else None,
                                   "seconds": round(time.perf_counter() - stage_start, 1)}
        del trainer
        gc.collect()
        _report(job["key"], stage - 1, 1.0)
    record["checkpoint"] = record["stages"][stages]["output_dir"]
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


# ---- evaluation: the comparison harness -------------------------------------------------------------


def harness_config(rows: list[ToyRow], checkpoints: dict[str, str], data: Path, out: Path, budget: Budget) -> dict:
    """The ``runs.yaml`` of one seed: the reference, every trained row at its own count, every reducer
    row on the reference's checkpoint at ``budget.tokens`` (at its floor when it cannot go lower);
    paths absolute."""
    from llava.model.token_reduction.registry import TOKEN_REDUCERS

    reference = next(row for row in rows if row.reference)
    entries = []
    for row in rows:
        if row.reducer is None:
            entries.append({"name": row.name, "checkpoint": str(Path(checkpoints[row.name]).resolve()),
                            "method": "none" if row.reference else "trained"})
            continue
        entry = {"name": row.name, "checkpoint": str(Path(checkpoints[reference.name]).resolve()),
                 "method": row.reducer, "options": dict(row.reducer_options), "at_floor": True}
        if {"budget", "ratio"} & set(TOKEN_REDUCERS.get(row.reducer).option_names()) and not (
                {"budget", "ratio"} & set(row.reducer_options)):
            entry["budget"] = budget.tokens
        entries.append(entry)
    # absolute paths: the harness reads relative ones from the config file's folder
    data, out = data.resolve(), out.resolve()
    return {"benchmark": "mvbench", "question_file": str(data / "eval" / "json"),
            "video_folder": str(data / "eval" / "video"), "output": str(out), "num_frames": budget.num_frames,
            "layout": "checkpoint", "inference": {"torch_dtype": "float32", "device": "cpu"}, "rows": entries}


def compare_shard(job: dict) -> dict:
    """One shard of one seed's harness pass (in a worker): answers its share of every row."""
    from llava.eval import compare

    folder = Path(job["folder"])
    log = folder / f"shard{job['chunk']}.log"

    def work():
        status = compare.main(["--config", job["config"], "--num-chunks", str(job["chunks"]),
                               "--chunk-idx", str(job["chunk"])])
        if status:
            raise RuntimeError(f"llava.eval.compare exited with {status} (see {log})")
        return {"seed": job["seed"], "chunk": job["chunk"]}

    result = _logged(log, work)
    _report(job["key"], 0, 1.0)
    return result


def compare_report(folder: Path, chunks: int) -> list[dict]:
    """Merges a seed's shards and writes the harness's table, plots and ``results.jsonl``."""
    from llava.eval import compare

    # the toy set is MVBench's layout with one of its 20 tasks: the loader's note on the 19 absent ones is expected
    benchmarks_log = logging.getLogger("llava.eval.benchmarks")
    level = benchmarks_log.level
    benchmarks_log.setLevel(logging.ERROR)
    try:
        status = compare.main(["--config", str(folder / "runs.yaml"), "--num-chunks", str(chunks), "--report-only"])
    finally:
        benchmarks_log.setLevel(level)
    if status:
        raise RuntimeError(f"llava.eval.compare --report-only exited with {status} for {folder}")
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


# ---- pictures ---------------------------------------------------------------------------------------


def eval_clips(data: Path, budget: Budget) -> list[ToyClip]:
    """The first ``budget.picture_clips`` eval videos, sampled as the eval samples them, each asked
    about its two in-block tiles."""
    from llava.toy.synthetic import EVAL_TASK_FILE, EVAL_VIDEO_DIR, color_question

    items = json.loads((data / "eval" / "json" / EVAL_TASK_FILE).read_text())
    clips = []
    for item in items[: budget.picture_clips]:
        video = load_video_frames(data / "eval" / "video" / EVAL_VIDEO_DIR / item["video"], num_frames=budget.num_frames)
        frames, indices = video.frames, video.frame_indices
        tiles = [o for o in item["objects"] if o["in_block"]][:2]
        targets = tuple((_first_sampled(o["appears"], indices), *o["cell"]) for o in tiles)
        clips.append(ToyClip(Path(item["video"]).stem, frames, tuple(color_question(o["rim"]) for o in tiles),
                             targets))
    return clips


def _first_sampled(appears: int, indices) -> int:
    """Position among the sampled frames of the first one at or after ``appears``."""
    for position, index in enumerate(indices):
        if index >= appears:
            return position
    return len(indices) - 1


def draw_picture(job: dict) -> dict:
    """One row's picture sheet (in a worker); a failure is logged and reported, not raised."""
    row = next(row for row in all_rows() if row.name == job["row"])
    if job["options"] is not None:
        row = dataclasses.replace(row, reducer_options=job["options"])
    out = Path(job["out"])
    try:
        clips = eval_clips(Path(job["data"]), Budget(**job["budget"]))
        module, _, function = row.picture.partition(":")
        getattr(importlib.import_module(module), function)(row, Path(job["checkpoint"]), clips, out)
        result = {"row": row.name, "picture": str(out)}
    except Exception as err:  # a picture is not worth the table: counted and named at the end
        logger.error("picture of %s failed: %s", row.name, err, exc_info=True)
        result = {"row": row.name, "error": f"{type(err).__name__}: {err}"}
    _report(job["key"], 0, 1.0)
    return result


# ---- results ----------------------------------------------------------------------------------------


def aggregate(rows: list[ToyRow], harness: dict[int, list[dict]]) -> list[dict]:
    """Per row (table order): the harness's per-seed accuracy (correct answers over all questions), tokens
    and FLOPs, mean and std over seeds."""
    from llava.eval.compare import matched_tokens

    reference = next(row for row in rows if row.reference)
    by_seed = {seed: {r["name"]: r for r in results} for seed, results in harness.items()}
    seeds = sorted(by_seed)
    ref_tokens = statistics.fmean(matched_tokens(by_seed[s][reference.name]) for s in seeds)
    out = []
    for row in rows:
        results = [by_seed[s][row.name] for s in seeds]
        # every question counts: an empty reply (which the benchmark's own score leaves out) is wrong here
        accuracies = [100.0 * r["correct"] / r["questions"] for r in results]
        tokens = statistics.fmean(matched_tokens(r) for r in results)
        flops = {part: statistics.fmean((r["flops"][part] or {"mean": 0.0})["mean"] for r in results)
                 for part in results[0]["flops"]}
        out.append({
            "name": row.name, "label": row.label, "methods": list(row.methods),
            "kind": "reference" if row.reference else ("training-free" if row.reducer else "trained"),
            "tokens": round(tokens, 2), "token_share": round(tokens / ref_tokens, 4),
            "matched_on": results[0]["matched_on"], "at_floor": any(r["at_floor"] for r in results),
            "accuracy": accuracies, "acc_mean": round(statistics.fmean(accuracies), 2),
            "acc_std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
            "gflops": {part: round(value / 1e9, 4) for part, value in flops.items()}, "seeds": seeds,
        })
    return out


def format_table(results: list[dict], chance: float) -> str:
    seeds = results[0]["seeds"]
    spread = "mean ± std" if len(seeds) > 1 else "single seed"
    lines = [f"| row | kind | visual tokens | % of reference | accuracy % ({spread}) | per seed | "
             "GFLOPs vision+projector | GFLOPs LLM prefill |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for r in results:
        acc = f"{r['acc_mean']:.1f}" + (f" ± {r['acc_std']:.1f}" if r["acc_std"] is not None else "")
        tokens = f"{r['tokens']:.0f}" + ("*" if r["at_floor"] else "") + (
            " (layer avg)" if r["matched_on"] == "layer_average_tokens" else "")
        vision = sum(v for k, v in r["gflops"].items() if k != "llm_prefill")
        lines.append(f"| `{r['name']}` {r['label']} | {r['kind']} | {tokens} | {100 * r['token_share']:.1f} | {acc} | "
                     f"{', '.join(f'{a:.1f}' for a in r['accuracy'])} | {vision:.3g} | {r['gflops']['llm_prefill']:.3g} |")
    lines += ["", f"Seeds {', '.join(map(str, seeds))}; chance {chance:.0f} %. `*`: a training-free reducer at its "
              "floor (it cannot reach the budget). Tokens, accuracy and FLOPs per question are the comparison "
              "harness's (`compare/seedN/results.jsonl`)."]
    return "\n".join(lines)


KIND_COLOURS = {"reference": (60, 60, 60), "trained": (200, 60, 50), "training-free": (110, 130, 160)}


def accuracy_chart(results: list[dict], out: Path, chance: float) -> Path:
    """Bars of the rows' accuracy (mean, ±std whiskers over seeds) coloured by kind, visual tokens under
    each bar, the ``chance`` level (percent) dashed."""
    from PIL import Image, ImageDraw

    bar, gap, left, top, plot_h = 70, 24, 60, 50, 300
    width = left + len(results) * (bar + gap) + gap
    canvas = Image.new("RGB", (width, top + plot_h + 60), "white")
    draw = ImageDraw.Draw(canvas)
    seeds = results[0]["seeds"]
    draw.text((left, 12), f"Toy zoo: accuracy on the held-out set ({'mean ± std over seeds ' if len(seeds) > 1 else 'seed '}"
              f"{', '.join(map(str, seeds))}); dark: reference, red: trained, blue: training-free", fill="black")

    def y_of(value: float) -> float:
        return top + plot_h * (1 - value / 100)

    for tick in range(0, 101, 25):
        draw.line([(left - 5, y_of(tick)), (width - gap // 2, y_of(tick))], fill=(225, 225, 225))
        draw.text((8, y_of(tick) - 6), f"{tick}%", fill="black")
    for x in range(left, width - gap // 2, 12):
        draw.line([(x, y_of(chance)), (x + 6, y_of(chance))], fill=(120, 120, 120), width=2)
    for index, row in enumerate(results):
        x0 = left + gap + index * (bar + gap)
        mean, std = row["acc_mean"], row["acc_std"]
        draw.rectangle([x0, y_of(mean), x0 + bar, y_of(0)], fill=KIND_COLOURS[row["kind"]])
        if std:
            centre = x0 + bar // 2
            draw.line([(centre, y_of(max(mean - std, 0))), (centre, y_of(min(mean + std, 100)))], fill="black", width=2)
        draw.text((x0, y_of(mean) - 14), f"{mean:.1f}", fill="black")
        draw.text((x0, top + plot_h + 6), row["name"][:12], fill="black")
        draw.text((x0, top + plot_h + 22), f"{row['tokens']:.0f} tokens", fill=(80, 80, 80))
    out = Path(out)
    canvas.save(out)
    return out


def pareto_plot(results: list[dict], out: Path) -> Path:
    from llava.eval.plots import Point, pareto_front, scatter

    front = pareto_front([(r["tokens"], r["acc_mean"]) for r in results])
    points = [Point(r["tokens"], r["acc_mean"], r["name"], r["kind"], front=on, hollow=r["at_floor"])
              for r, on in zip(results, front)]
    return scatter(points, "visual tokens per question", "accuracy % (mean over seeds)",
                   f"toy zoo: accuracy vs visual tokens (seeds {', '.join(map(str, results[0]['seeds']))})", out)


# ---- the whole table -------------------------------------------------------------------------------


class _Pool:
    """A process pool with one progress bar over named units of work."""

    def __init__(self, workers: int):
        from tqdm.auto import tqdm

        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                        initargs=(self.queue, threads, os.getpid()))
        self.bar = None
        self._tqdm = tqdm

    def run(self, function, jobs: list[dict], units: dict[str, list[str]]) -> tuple[list, list]:
        """Runs ``function(job)`` for every job; ``units[key]``: the names of its progress units."""
        if self.bar is None:  # made on first use: nothing printed while the shared starts are built
            self.bar = self._tqdm(total=0, unit="unit",
                                  bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]{postfix}")
        progress: dict[tuple[str, int], float] = {}
        active: dict[str, str] = {}
        self.bar.total += sum(len(u) for u in units.values())
        base = self.bar.n
        results, failures = [], []
        pending = {self.pool.submit(function, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while not self.queue.empty():
                key, unit, fraction = self.queue.get()
                if key not in units:  # an earlier phase's last report, arriving after its job was counted
                    continue
                if unit < 0:  # cached: all done
                    progress.update({(key, u): 1.0 for u in range(len(units[key]))})
                    active.pop(key, None)
                    continue
                progress[(key, unit)] = max(progress.get((key, unit), 0.0), fraction)
                now = unit + (fraction >= 1)
                active[key] = units[key][now] if now < len(units[key]) else "done"
            for future in done:
                job = pending.pop(future)
                active.pop(job["key"], None)
                try:
                    results.append(future.result())
                except Exception as err:
                    failures.append((job, err))
                progress.update({(job["key"], u): 1.0 for u in range(len(units[job["key"]]))})
            self.bar.n = base + sum(progress.values())
            self.bar.set_postfix_str(", ".join(f"{k}: {v}" for k, v in sorted(active.items()) if v != "done"),
                                     refresh=False)
            self.bar.refresh()
        return results, failures

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.pool.shutdown()
        self.queue.close()  # its feeder thread and semaphores end here, not in a warning at exit
        self.queue.join_thread()


def _fail(failures: list, what: str) -> None:
    for job, err in failures:
        print(f"{what} {job['key']} failed: {err!r}; log: {job.get('log')}", file=sys.stderr)
    raise SystemExit(1)


def run_zoo(out: Path, tiny: Path, budget: Budget, seeds: list[int], rows: list[ToyRow], workers: int,
            fresh: bool = False, pictures: bool = True) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = [row for row in rows if row.stages]
    llm = (f"Qwen2 pre-trained on scenes of tiles ({budget.pretrain_steps} steps)" if budget.pretrain_steps
           else "the random tiny Qwen2 as every row's LLM")
    print(f"[1/5] shared starts under {tiny}: tiny checkpoints, SigLIP LiT-tuned on the tiles ({budget.lit_steps} "
          f"steps), {llm}", flush=True)
    data = out / "data"
    pool = _Pool(workers)
    try:
        starts = shared_starts(pool, tiny, data, budget)
    except BaseException:
        pool.close()
        raise
    data_fp = _fingerprint(dataset_stamp(budget))
    extra_env = {row.name: dict(row.prepare(tiny)) if row.prepare else {} for row in trained}
    jobs = []
    for row in trained:
        for seed in seeds:
            run_dir = out / "runs" / row.name / f"seed{seed}"
            if fresh and run_dir.exists():
                shutil.rmtree(run_dir)
            identity = _row_identity(row)
            env = {**dict(row.env), **extra_env[row.name]}
            fingerprint = _fingerprint([identity, env, dataclasses.asdict(budget), seed, data_fp, starts["identity"]])
            declaration = {"name": row.name, "label": row.label, "methods": list(row.methods),
                           "stages": [dataclasses.asdict(s) for s in row.stages]}
            jobs.append({"key": f"{row.name}/seed{seed}", "row": row.name, "seed": seed, "run_dir": str(run_dir),
                         "data": str(data), "tiny": str(tiny), "llm": starts["llm"], "vision": starts["vision"],
                         "budget": dataclasses.asdict(budget), "env": env, "declaration": declaration,
                         "fingerprint": fingerprint, "log": str(run_dir / "run.log")})
    print(f"[3/5] {len(jobs)} training runs ({len(trained)} rows x {len(seeds)} seeds), {workers} worker(s); "
          f"logs: {out / 'runs'}/ROW/seedN/run.log", flush=True)
    try:
        units = {job["key"]: [f"stage {k + 1}" for k in range(len(job["declaration"]["stages"]))] for job in jobs}
        records, failures = pool.run(train_run, jobs, units)
        if failures:
            _fail(failures, "run")
        checkpoints = {seed: {r["row"]: r["checkpoint"] for r in records if r["seed"] == seed} for seed in seeds}

        print(f"[4/5] the comparison harness on {budget.eval_videos} held-out questions per row "
              f"({len(rows)} rows x {len(seeds)} seeds)", flush=True)
        shard_jobs, folders = [], {}
        chunks = max(1, workers)
        for seed in seeds:
            folder = out / "compare" / f"seed{seed}"
            config = harness_config(rows, checkpoints[seed], data, folder, budget)
            fingerprint = _fingerprint([config, sorted(r["fingerprint"] for r in records if r["seed"] == seed)])
            folders[seed] = folder
            if _cached(folder, fingerprint) is not None and not fresh:
                continue
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / "runs.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            (folder / "pending.json").write_text(json.dumps({"fingerprint": fingerprint}))
            for chunk in range(chunks):
                shard_jobs.append({"key": f"harness/seed{seed}/shard{chunk}", "seed": seed, "chunk": chunk,
                                   "chunks": chunks, "folder": str(folder), "config": str(folder / "runs.yaml"),
                                   "log": str(folder / f"shard{chunk}.log")})
        _, failures = pool.run(compare_shard, shard_jobs, {job["key"]: ["answering"] for job in shard_jobs})
        if failures:
            _fail(failures, "harness shard")
        harness = {}
        for seed, folder in folders.items():
            pending = folder / "pending.json"
            harness[seed] = compare_report(folder, chunks)
            if pending.is_file():
                pending.rename(folder / "done.json")

        picture_jobs = []
        if pictures:
            reference = next(row for row in rows if row.reference)
            first = min(seeds)
            for row in rows:
                if row.picture is None:
                    continue
                checkpoint = checkpoints[first][reference.name if row.reducer else row.name]
                # a reducer is drawn with the options the harness resolved for the budget (its table row's)
                options = next(r["options"] for r in harness[first] if r["name"] == row.name) if row.reducer else None
                picture_jobs.append({"key": f"picture/{row.name}", "row": row.name, "checkpoint": checkpoint,
                                     "options": options, "data": str(data), "budget": dataclasses.asdict(budget),
                                     "out": str(out / "pictures" / f"{row.name}.png")})
        drawn, _ = pool.run(draw_picture, picture_jobs, {job["key"]: ["drawing"] for job in picture_jobs})
    finally:
        pool.close()

    print("[5/5] results", flush=True)
    from llava.toy.synthetic import COLORS

    results = aggregate(rows, harness)
    chance = 100 / len(COLORS)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "runs.json").write_text(json.dumps(sorted(records, key=lambda r: (r["row"], r["seed"])), indent=1) + "\n")
    table = format_table(results, chance)
    elapsed = time.perf_counter() - started
    (out / "results.md").write_text(f"{table}\n\nWall time {elapsed:.0f} s ({len(records)} runs).\n")
    pareto_plot(results, out / "pareto.png")
    accuracy_chart(results, out / "accuracy.png", chance)
    print(table)
    failed = [d for d in drawn if "error" in d]
    if pictures:
        print(f"pictures: {out / 'pictures'} ({len(drawn) - len(failed)} drawn"
              + (f"; failed: {', '.join(d['row'] for d in failed)}" if failed else "") + ")")
    print(f"results: {out / 'results.json'}, {out / 'pareto.png'} ({elapsed:.0f} s)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="playground/demo", help="folder of the runs, tables and pictures")
    parser.add_argument("--tiny", default="playground/tiny", help="tiny checkpoints (built when missing)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="budget of data and training: default, or quick (a smoke run)")
    parser.add_argument("--subset", default="headline", choices=SUBSETS,
                        help="headline: the rows plugins mark for make demo; all: every row")
    parser.add_argument("--rows", nargs="+", default=None, help="these rows only (and the reference)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per trained row and seed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes side by side (runs, harness shards, pictures)")
    parser.add_argument("--fresh", action="store_true", help="redo runs and harness passes even when cached")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false", help="skip the picture sheets")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="start every row from the tiny LLM pre-trained this many steps on scenes of tiles "
                             "(llava.toy.tiny_pretrain); default: the profile's (0: the random tiny LLM)")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = select_rows(all_rows(), args.subset, args.rows)
    except ValueError as err:
        parser.error(str(err))
    missing = rowless_methods(all_rows())
    if missing:
        logger.warning("registered without a toy row (absent from the table): %s", ", ".join(missing))
    if args.list:
        for row in rows:
            kind = "reference" if row.reference else ("training-free" if row.reducer else "trained")
            print(f"{row.name}\t{kind}\t{'headline' if row.headline else ''}\t{row.label}")
        return 0
    budget = PROFILES[args.profile]
    if args.pretrain_steps is not None:
        if args.pretrain_steps < 0:
            parser.error("--pretrain-steps must be >= 0")
        budget = dataclasses.replace(budget, pretrain_steps=args.pretrain_steps)
    run_zoo(Path(args.out), Path(args.tiny), budget, sorted(set(args.seeds)), rows, args.workers,
            fresh=args.fresh, pictures=args.pictures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
