"""Equal-budget comparison: trained compressors and training-free token reducers, one eval, one table.

    python -m llava.eval.compare --config runs.yaml                       # infer, score, report
    python -m llava.eval.compare --config runs.yaml --preset budgets      # every reducer at 3 budgets
    python -m llava.eval.compare --config runs.yaml --num-chunks 4 --chunk-idx 0   # one shard (per GPU)
    python -m llava.eval.compare --config runs.yaml --num-chunks 4 --report-only   # merge shards, report

``runs.yaml`` (relative paths are read from the file's folder)::

    benchmark: mvbench                 # a multiple-choice benchmark of llava.eval.benchmarks
    question_file: MVBench/json
    video_folder: MVBench/video
    output: compare/mvbench            # results.jsonl, table.md, *.png and one folder per row
    num_frames: 32
    layout: onevision                  # checkpoint | onevision | llava_video (llava.eval.video_infer)
    parser_version: legacy             # letter extraction, llava.eval.scoring
    inference: {max_new_tokens: 16, device: auto}   # other flags of llava.eval.model_video_mcqa
    rows:
      - {name: vanilla, checkpoint: ckpt/ov-7b, method: none}
      - {name: compressor, checkpoint: ckpt/compressor-7b, method: trained}
      - {name: pool, checkpoint: ckpt/ov-7b, method: <registered reducer>, budget: 680}
      - {name: pruned, checkpoint: ckpt/ov-7b, method: <reducer>, ratio: 0.25, options: {...}}

A row is a checkpoint and a ``method``: ``none`` (the checkpoint as it is), ``trained`` (the same,
labelled as the checkpoint's own trained projector, at its own token count), the name of a
registered token reducer (:mod:`llava.model.token_reduction`) with its ``options``, or ``all``: one
row per registered reducer (named ``<name>-<reducer>``; ``options`` then maps a reducer's name to its
options). A row may set ``num_frames``, ``layout`` and
``at_floor`` of its own.

Budgets. ``budget`` counts LLM-input visual tokens without newline tokens (reported apart); ``ratio``
is a fraction of the unreduced count M. The harness turns them into the reducer's own ``budget`` or
``ratio`` option (whichever it takes). In-LLM reducers (stage ``llm``) keep all M tokens up to layer
K: they are matched on the layer-average visual tokens, ``(K*M + (L-K)*R) / L`` over the L decoder
layers, so the harness asks them to keep ``R`` from layer K on; the table says which count a row is
matched on. A budget a method cannot reach is an error naming the row, unless the row (or a preset)
allows ``at_floor``: it then runs at the lowest count it can produce, marked in the table.

Presets (``--preset`` or ``preset:``): ``budgets`` runs every reducer row at 680 / 1328 / 2624 tokens
with 32 / 64 / 128 frames (the budgets of published trained compressors: ``ceil(T/4)*81 + 32``) and
every other row at each frame count; ``ratios`` at 10 / 15 / 25 % of M. A list of
``{num_frames?, budget | ratio}`` points is a custom preset.

Per row, measured on every answered question and recomputed from the answers lines (the per-sample
artefact: ``measure`` of each line): LLM-input visual tokens, newline tokens, the sequence length of
every decoder layer in the prompt forward, time to first token (from ``generate``'s call to the
first logits, the vision path included), peak device memory, FLOPs (:mod:`llava.eval.flops`).
Per row in ``results.jsonl``: accuracy (overall, headline, per task), token statistics (mean / min /
max), mean FLOPs by part, TTFT and memory with the device named, the exact settings, package
versions, the git commit and the model's identity. ``table.md`` and two PNGs (accuracy against
visual tokens and against prefill FLOPs, Pareto front marked) are drawn from those records.

Shards: each ``--chunk-idx`` answers its share of every row (resumable: rerun an interrupted shard);
``--report-only`` merges the shards and writes the same outputs as an unsharded run (timings aside).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from llava.model.token_reduction.registry import TOKEN_REDUCERS, build_token_reducer
from llava.registry import load_plugins

from .answers import merge_answer_files, model_fingerprint, write_lines
from .benchmarks import BENCHMARKS
from .cli import UsageError, command, questions_from_args
from .eval_video_mcqa import score_mcqa
from .flops import VISUAL_PARTS
from .measure import MeasuredVideoQA, sample_counts
from .plots import Point, pareto_front, scatter
from .scoring import PARSER_VERSIONS
from .video_infer import VISUAL_LAYOUTS, LoadedModel, build_parser, load_model, run_inference
from .video_io import resolve_video

logger = logging.getLogger(__name__)

PLAIN_METHODS = ("none", "trained")  # no reducer: the checkpoint's own visual path
EVERY_REDUCER = "all"  # a row that stands for one row per registered reducer

#: Equal-budget presets: ``(num_frames, budget)`` or ``ratio`` points.
PRESETS: dict[str, tuple[dict, ...]] = {
    "budgets": ({"num_frames": 32, "budget": 680}, {"num_frames": 64, "budget": 1328},
                {"num_frames": 128, "budget": 2624}),
    "ratios": ({"ratio": 0.10}, {"ratio": 0.15}, {"ratio": 0.25}),
}
TOP_KEYS = {"benchmark", "question_file", "gt_file", "video_folder", "subtitle_folder", "output", "num_frames",
            "layout", "parser_version", "preset", "inference", "rows"}
ROW_KEYS = {"name", "checkpoint", "method", "options", "budget", "ratio", "num_frames", "layout", "at_floor"}
#: ``inference:`` keys passed on as flags of the inference command (others are set by the harness)
INFERENCE_KEYS = {"conv_mode", "prompt_style", "video_backend", "temperature", "top_p", "num_beams", "max_new_tokens",
                  "seed", "device", "torch_dtype", "attn_implementation", "allow_missing_videos",
                  "allow_outside_data_root"}
TIMING_KEYS = ("ttft_s", "peak_memory_bytes")  # differ between runs; everything else is reproducible


class CompareConfigError(UsageError):
    """A ``runs.yaml`` that cannot run; the message names the row (index and name) or the key."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the comparison after presets are applied.

    ``index`` is the row's position in the config's ``rows`` (0-based); a preset turns one config row
    into several rows sharing it, told apart by ``name``.
    """

    index: int
    name: str
    checkpoint: str
    method: str
    options: dict
    budget: int | None
    ratio: float | None
    num_frames: int
    layout: str
    at_floor: bool

    @property
    def label(self) -> str:
        return f"row {self.index} ({self.name})"

    @property
    def key(self) -> str:
        """Folder name of the row's outputs."""
        return f"{self.index:02d}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)

    @property
    def reducer(self) -> str | None:
        return None if self.method in PLAIN_METHODS else self.method


@dataclasses.dataclass(frozen=True)
class Config:
    benchmark: str
    question_file: str
    gt_file: str | None
    video_folder: str
    subtitle_folder: str | None
    output: Path
    parser_version: str
    inference: dict
    rows: tuple[Row, ...]


# ---------------------------------------------------------------------------------------------- config


def load_config(path: str | Path, preset: str | None = None) -> Config:
    """Reads and checks ``runs.yaml``; ``preset`` (the flag) overrides the file's ``preset:``."""
    path = Path(path)
    if not path.is_file():
        raise CompareConfigError(f"config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CompareConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise CompareConfigError(f"{path}: the top level must be a mapping with a 'rows' list")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise CompareConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(TOP_KEYS)}")
    for key in ("benchmark", "question_file", "video_folder", "output", "rows"):
        if raw.get(key) in (None, "", []):
            raise CompareConfigError(f"{path}: '{key}' is required")
    benchmark = raw["benchmark"]
    if BENCHMARKS.get(benchmark) is None or BENCHMARKS[benchmark].kind != "mcqa":
        choices = sorted(n for n, b in BENCHMARKS.items() if b.kind == "mcqa")
        raise CompareConfigError(f"{path}: benchmark {benchmark!r} is not a multiple-choice benchmark ({choices})")
    parser_version = raw.get("parser_version", "legacy")
    if parser_version not in PARSER_VERSIONS:
        raise CompareConfigError(f"{path}: parser_version {parser_version!r} is not one of {PARSER_VERSIONS}")
    inference = dict(raw.get("inference") or {})
    bad = sorted(set(inference) - INFERENCE_KEYS)
    if bad:
        raise CompareConfigError(f"{path}: unknown inference key(s) {bad}; known: {sorted(INFERENCE_KEYS)}")
    base = path.parent

    def resolve(value):
        return None if value is None else str(base / Path(value).expanduser())

    if not isinstance(raw["rows"], list):
        raise CompareConfigError(f"{path}: 'rows' must be a list")
    defaults = {"num_frames": raw.get("num_frames", 32), "layout": raw.get("layout", "checkpoint")}
    rows = [row for i, entry in enumerate(raw["rows"]) for row in _expand_all(_parse_row(i, entry, defaults, resolve))]
    points = _preset_points(preset if preset is not None else raw.get("preset"), path)
    if points:
        rows = [expanded for row in rows for expanded in _apply_preset(row, points)]
    seen: dict[str, Row] = {}
    for row in rows:
        if row.name in seen:
            raise CompareConfigError(f"{row.label}: name {row.name!r} is already used by {seen[row.name].label}")
        seen[row.name] = row
    return Config(benchmark, resolve(raw["question_file"]), resolve(raw.get("gt_file")), resolve(raw["video_folder"]),
                  resolve(raw.get("subtitle_folder")), Path(resolve(raw["output"])), parser_version, inference,
                  tuple(rows))


def _parse_row(index: int, entry: Any, defaults: dict, resolve) -> Row:
    where = f"row {index}" + (f" ({entry.get('name')})" if isinstance(entry, dict) and entry.get("name") else "")
    if not isinstance(entry, dict):
        raise CompareConfigError(f"{where}: must be a mapping with name, checkpoint and method")
    unknown = sorted(set(entry) - ROW_KEYS)
    if unknown:
        raise CompareConfigError(f"{where}: unknown key(s) {unknown}; a row takes {sorted(ROW_KEYS)}")
    for key in ("name", "checkpoint", "method"):
        if not entry.get(key):
            raise CompareConfigError(f"{where}: '{key}' is required")
    method, options = str(entry["method"]), entry.get("options") or {}
    if not isinstance(options, dict):
        raise CompareConfigError(f"{where}: 'options' must be a mapping of the reducer's options")
    budget, ratio = entry.get("budget"), entry.get("ratio")
    if method in PLAIN_METHODS:
        if options or budget is not None or ratio is not None:
            raise CompareConfigError(
                f"{where}: method {method!r} runs the checkpoint at its own token count; it takes no options, "
                f"budget or ratio (a trained method's reduced budget is a checkpoint of its own)")
    elif method == EVERY_REDUCER:
        for name, own in options.items():
            if name not in TOKEN_REDUCERS or not isinstance(own, dict):
                raise CompareConfigError(f"{where}: method {EVERY_REDUCER!r} takes options per reducer "
                                         f"({{reducer name: {{option: value}}}}); {name!r} is not a registered reducer "
                                         f"with a mapping of options")
            _check_options(where, name, own)
    elif method not in TOKEN_REDUCERS:
        raise CompareConfigError(
            f"{where}: unknown method {method!r}; use one of {list(PLAIN_METHODS)} or a registered token reducer "
            f"({', '.join(TOKEN_REDUCERS.names()) or 'none registered'})")
    else:
        _check_options(where, method, options)
    layout = entry.get("layout", defaults["layout"])
    if layout not in VISUAL_LAYOUTS:
        raise CompareConfigError(f"{where}: layout {layout!r} is not one of {list(VISUAL_LAYOUTS)}")
    frames = entry.get("num_frames", defaults["num_frames"])
    if not isinstance(frames, int) or frames < 1:
        raise CompareConfigError(f"{where}: num_frames must be a positive integer, got {frames!r}")
    row = Row(index, str(entry["name"]), resolve(entry["checkpoint"]), method, dict(options), None, None, frames,
              layout, bool(entry.get("at_floor", False)))
    return _with_target(row, budget, ratio, where)


def _check_options(where: str, method: str, options: dict) -> None:
    accepted = TOKEN_REDUCERS.get(method).option_names()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CompareConfigError(f"{where}: token reducer {method!r}: unknown option(s) {', '.join(unknown)}; "
                                 f"it takes {', '.join(accepted) or 'no options'}")


def _expand_all(row: Row) -> list[Row]:
    """``method: all``: one row per registered reducer (those taking a budget or ratio when the row sets
    one), each with its entry of the row's ``options`` (``{reducer: {option: value}}``)."""
    if row.method != EVERY_REDUCER:
        return [row]
    names = [name for name in TOKEN_REDUCERS.names()
             if (row.budget is None and row.ratio is None)
             or {"budget", "ratio"} & set(TOKEN_REDUCERS.get(name).option_names())]
    if not names:
        raise CompareConfigError(f"{row.label}: method {EVERY_REDUCER!r}, but no registered reducer takes a budget")
    rows = [dataclasses.replace(row, name=f"{row.name}-{name}", method=name, options=dict(row.options.get(name, {})),
                                budget=None, ratio=None) for name in names]
    return [_with_target(r, row.budget, row.ratio, r.label) for r in rows]


def _with_target(row: Row, budget, ratio, where: str) -> Row:
    if budget is not None and ratio is not None:
        raise CompareConfigError(f"{where}: give a budget or a ratio, not both")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise CompareConfigError(f"{where}: budget must be a positive number of tokens, got {budget!r}")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1):
        raise CompareConfigError(f"{where}: ratio must be in (0, 1], got {ratio!r}")
    clash = sorted({"budget", "ratio"} & set(row.options)) if (budget is not None or ratio is not None) else []
    if clash:
        raise CompareConfigError(f"{where}: options set {clash} and the row sets a budget/ratio: set it once")
    return dataclasses.replace(row, budget=budget, ratio=None if ratio is None else float(ratio))


def _preset_points(preset, path: Path) -> tuple[dict, ...]:
    if preset in (None, "none"):
        return ()
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise CompareConfigError(f"{path}: unknown preset {preset!r}; use one of {sorted(PRESETS)} or a list")
        return PRESETS[preset]
    if not isinstance(preset, list) or not all(isinstance(p, dict) for p in preset):
        raise CompareConfigError(f"{path}: preset must be a name or a list of {{num_frames, budget | ratio}} points")
    for point in preset:
        if set(point) - {"num_frames", "budget", "ratio"} or ("budget" in point) == ("ratio" in point):
            raise CompareConfigError(f"{path}: preset point {point} needs exactly one of budget / ratio "
                                     "(and optionally num_frames)")
    return tuple(preset)


def _apply_preset(row: Row, points: Sequence[dict]) -> list[Row]:
    """A reducer row at every point, instead of its own budget (its floor allowed); other rows once per
    distinct frame count."""
    if row.reducer is None:
        frames = list(dict.fromkeys(p.get("num_frames", row.num_frames) for p in points))
        if len(frames) == 1:
            return [dataclasses.replace(row, num_frames=frames[0])]
        return [dataclasses.replace(row, name=f"{row.name}/{t}f", num_frames=t) for t in frames]
    row = dataclasses.replace(row, budget=None, ratio=None)  # the preset's budgets replace the row's own
    out = []
    for point in points:
        frames = point.get("num_frames", row.num_frames)
        target = f"{point['budget']}t" if "budget" in point else f"{point['ratio']:.0%}"
        name = f"{row.name}@{target}" + (f"/{frames}f" if "num_frames" in point else "")
        base = dataclasses.replace(row, name=name, num_frames=frames, at_floor=True)
        out.append(_with_target(base, point.get("budget"), point.get("ratio"), row.label))
    return out


# ---------------------------------------------------------------------------------------------- rows


def _row_args(config: Config, row: Row, answers: Path, num_chunks: int, chunk_idx: int,
              reducer_options: dict | None) -> argparse.Namespace:
    argv = ["--model-path", row.checkpoint, "--benchmark", config.benchmark, "--question-file", config.question_file,
            "--video-folder", config.video_folder, "--answers-file", str(answers), "--num-frames", str(row.num_frames),
            "--num-chunks", str(num_chunks), "--chunk-idx", str(chunk_idx), "--visual-layout", row.layout]
    if config.gt_file:
        argv += ["--gt-file", config.gt_file]
    if config.subtitle_folder:
        argv += ["--subtitle-folder", config.subtitle_folder]
    if row.reducer is not None:
        argv += ["--token-reducer", row.reducer, "--token-reducer-config", json.dumps(reducer_options, sort_keys=True)]
    for key, value in sorted(config.inference.items()):
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return build_parser("mcqa", 16, "").parse_args(argv)


class RowRunner:
    """Runs the rows of one checkpoint on one loaded model: sets layout and reducer, checks the row on
    a real question (a warm-up), then answers this shard's questions."""

    def __init__(self, config: Config, loaded: LoadedModel, questions: list, num_chunks: int, chunk_idx: int):
        self.config, self.loaded, self.questions = config, loaded, questions
        self.num_chunks, self.chunk_idx = num_chunks, chunk_idx
        model = loaded.model
        self.layout_keys = {key for layout in VISUAL_LAYOUTS.values() for key in layout}
        self.original = {key: getattr(model.config, key, None) for key in self.layout_keys}

    def _set_layout(self, layout: str) -> None:
        for key in self.layout_keys:
            setattr(self.loaded.model.config, key, self.original[key])
        for key, value in VISUAL_LAYOUTS[layout].items():
            setattr(self.loaded.model.config, key, value)

    def _probe(self, row: Row, args: argparse.Namespace) -> dict:
        """One measured answer to the first question with a video: the row's dry run."""
        folder = Path(self.config.video_folder)
        for question in self.questions:
            video = resolve_video(folder, question.videos)
            if video is not None:
                break
        else:
            raise CompareConfigError(f"{row.label}: no question of the benchmark has its video under {folder}")
        qa = MeasuredVideoQA(self.loaded, args)
        _, pixels = qa.visual(question, video)
        try:
            qa.answer(BENCHMARKS[self.config.benchmark].prompt(question, args.prompt_style, None), question.question,
                      pixels, question.qid)
        except (ValueError, TypeError, NotImplementedError, RuntimeError, KeyError) as err:
            raise CompareConfigError(f"{row.label}: method {row.method!r} fails on this checkpoint "
                                     f"({type(err).__name__}: {err})") from err
        return qa.record_extras()["measure"]

    def plan(self, row: Row) -> tuple[dict, dict | None]:
        """Resolves the row's reducer options for its budget, checks it, and returns the plan record."""
        model, inner = self.loaded.model, self.loaded.model.get_model()
        self._set_layout(row.layout)
        inner.set_token_reducer(None)
        args = _row_args(self.config, row, Path("unused"), 1, 0, None)
        full = sample_counts(self._probe(row, args))["visual_tokens"]  # M of this layout and frame count
        plan = {"row": row.index, "name": row.name, "checkpoint": row.checkpoint, "method": row.method,
                "num_frames": row.num_frames, "layout": row.layout, "budget": row.budget, "ratio": row.ratio,
                "unreduced_visual_tokens": full, "at_floor": False}
        if row.reducer is None:
            plan.update(stage="projector" if row.method == "trained" else "none", options=None,
                        matched_on="llm_input_tokens", target_tokens=None)
            return plan, None
        cls = TOKEN_REDUCERS.get(row.reducer)
        options = dict(row.options)
        target = None if row.budget is None and row.ratio is None else (
            row.budget if row.budget is not None else row.ratio * full)
        matched_on = "layer_average_tokens" if cls.stage == "llm" else (
            "llm_input_tokens" if cls.stage in ("features", "tokens") else "decode_time_only")
        if target is not None:
            asked = target
            if cls.stage == "llm":
                asked = self._kept_after_layer(row, cls, options, target, full, plan)
            self._set_target(row, cls, options, asked, row.ratio if cls.stage != "llm" else None, full)
        try:
            reducer = inner.set_token_reducer(row.reducer, options)
            claimed = model.num_visual_tokens(row.num_frames, "video")
        except ValueError as err:
            raise CompareConfigError(f"{row.label}: {err}") from None
        resolved = reducer.options()
        args = _row_args(self.config, row, Path("unused"), 1, 0, resolved)
        counts = sample_counts(self._probe(row, args))
        reached = counts["layer_average_visual_tokens" if cls.stage == "llm" else "visual_tokens"]
        if target is not None and cls.stage in ("features", "tokens", "llm") and reached > math.ceil(target) + (
                0.5 if cls.stage == "llm" else 0):
            if not row.at_floor:
                raise CompareConfigError(
                    f"{row.label}: budget {target:g} is below what {row.reducer!r} can produce here "
                    f"({reached:g} visual tokens at {row.num_frames} frames); set at_floor: true to run it at "
                    f"its floor")
            plan["at_floor"] = True
        plan.update(stage=cls.stage, options=resolved, matched_on=matched_on, target_tokens=target,
                    claimed_llm_input_tokens=claimed, llm_layer=getattr(reducer, "llm_layer", None))
        return plan, resolved

    def _kept_after_layer(self, row: Row, cls, options: dict, target: float, full: int, plan: dict) -> float:
        """R such that ``(K*M + (L-K)*R) / L`` equals the target layer average; K is read from the
        reducer built with the row's options and nothing pruned."""
        keep_all = dict(options)
        self._set_target(row, cls, keep_all, full, None, full)
        try:
            k = build_token_reducer(row.reducer, keep_all).llm_layer
        except ValueError as err:
            raise CompareConfigError(f"{row.label}: {err}") from None
        layers = self.loaded.model.config.num_hidden_layers
        if not isinstance(k, int) or not 0 <= k < layers:
            raise CompareConfigError(f"{row.label}: {row.reducer!r} prunes from decoder layer {k!r}, but the LLM of "
                                     f"{row.checkpoint} has layers 0..{layers - 1}")
        kept = (target * layers - k * full) / (layers - k)
        if kept < 0:
            if not row.at_floor:
                raise CompareConfigError(
                    f"{row.label}: a layer-average budget of {target:g} is below {row.reducer!r}'s floor "
                    f"{k * full / layers:g} (all {full} tokens in layers 0..{k - 1} of {layers}); set at_floor: true "
                    f"to run it at its floor")
            kept, plan["at_floor"] = 0.0, True
        plan["kept_after_layer"] = kept
        return kept

    @staticmethod
    def _set_target(row: Row, cls, options: dict, tokens: float, ratio: float | None, full: int) -> None:
        names = cls.option_names()
        if "budget" in names and (ratio is None or "ratio" not in names):
            options["budget"] = int(round(tokens))
        elif "ratio" in names:
            options["ratio"] = ratio if ratio is not None else tokens / full
        else:
            raise CompareConfigError(f"{row.label}: {row.reducer!r} takes neither a 'budget' nor a 'ratio' option "
                                     f"(it takes {names}); set its own options instead of a budget")

    def run(self, row: Row, plan: dict, resolved: dict | None) -> dict:
        """Answers this shard's questions of a planned row."""
        self._set_layout(row.layout)
        self.loaded.model.get_model().set_token_reducer(row.reducer, resolved)
        folder = self.config.output / "rows" / row.key
        folder.mkdir(parents=True, exist_ok=True)
        answers = folder / f"{self.num_chunks}_{self.chunk_idx}.jsonl"
        args = _row_args(self.config, row, answers, self.num_chunks, self.chunk_idx, resolved)
        tmp = folder / f".plan.json.{os.getpid()}"  # shards running side by side write the same plan
        tmp.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, folder / "plan.json")
        logger.info("%s: %s", row.label, {k: plan[k] for k in ("stage", "options", "target_tokens", "at_floor")})
        return run_inference(args, self.loaded, qa_class=MeasuredVideoQA)


def run_rows(config: Config, num_chunks: int, chunk_idx: int) -> None:
    """Answers this shard's questions for every row, loading each checkpoint once."""
    questions, _ = _questions(config)
    by_checkpoint: dict[str, list[Row]] = {}
    for row in config.rows:
        by_checkpoint.setdefault(row.checkpoint, []).append(row)
    for checkpoint, rows in by_checkpoint.items():
        plain = dataclasses.replace(rows[0], method="none", options={}, budget=None, ratio=None, layout="checkpoint")
        loaded = load_model(_row_args(config, plain, Path("unused"), 1, 0, None))  # each row sets its own
        runner = RowRunner(config, loaded, questions, num_chunks, chunk_idx)
        plans = [runner.plan(row) for row in rows]  # every row of the checkpoint checked before any answers
        for row, (plan, resolved) in zip(rows, plans):
            runner.run(row, plan, resolved)
        runner.loaded.model.get_model().set_token_reducer(None)
        del runner, loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("finished the rows of %s", checkpoint)


def _questions(config: Config):
    namespace = argparse.Namespace(benchmark=config.benchmark, question_file=config.question_file,
                                   gt_file=config.gt_file)
    return questions_from_args(namespace)


# ---------------------------------------------------------------------------------------------- report


def _stats(values: Sequence[float]) -> dict | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def environment() -> dict:
    """Package versions and the code's git commit (``dirty``: uncommitted changes to tracked files)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("transformers", "numpy", "tokenizers", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    for dist in metadata.packages_distributions().get("llava", []):
        versions[dist] = metadata.version(dist)
    repo = Path(__file__).resolve().parents[2]
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        logger.warning("no git commit for %s (not a git checkout, or git missing)", repo)
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty}


def model_identity(checkpoint: str) -> dict:
    config_path = Path(checkpoint) / "config.json"
    cfg = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return {"path": checkpoint, "weights": model_fingerprint(checkpoint), "model_type": cfg.get("model_type"),
            "projector": cfg.get("mm_projector_type"), "llm_layers": cfg.get("num_hidden_layers"),
            "hidden_size": cfg.get("hidden_size")}


def row_result(config: Config, row: Row, num_chunks: int, questions, fingerprint: str) -> dict:
    """Merges the row's shards, scores them and aggregates the per-question measures."""
    folder = config.output / "rows" / row.key
    plan_path = folder / "plan.json"
    if not plan_path.is_file():
        raise CompareConfigError(f"{row.label}: has not run (no {plan_path}); run the inference shards first")
    plan = json.loads(plan_path.read_text())
    shards = [folder / f"{num_chunks}_{i}.jsonl" for i in range(num_chunks)]
    merged = folder / "merged.jsonl"
    merge_answer_files(shards, merged, fingerprint, questions)
    answers = {r["question_id"]: r for r in map(json.loads, merged.read_text().splitlines())}
    report = score_mcqa(config.benchmark, questions, answers, config.parser_version)
    unmeasured = [qid for qid, r in answers.items() if not r["failed"] and "measure" not in r]
    if unmeasured:
        raise CompareConfigError(f"{row.label}: {merged} has answers without measurements (e.g. {unmeasured[0]}): "
                                 "they were not written by this harness; remove the row's folder and rerun")
    measures = [r["measure"] for r in answers.values() if not r["failed"]]
    counts = [sample_counts(m) for m in measures]
    flops = {part: _stats([m["flops"][part] for m in measures]) for part in (*VISUAL_PARTS, "llm_prefill")}
    tasks = {r["name"]: r["accuracy"] for r in report["tables"].get("task", [])}
    run = next(iter(answers.values()))["run"]
    return {
        **plan,
        "benchmark": config.benchmark, "questions": report["questions"], "failed": report["failed_items"],
        "accuracy": report["accuracy"], "headline": report["headline"], "task_accuracy": tasks,
        "correct": report["correct"], "empty_replies": report["empty_replies"],
        "parse_failures": report["parse_failures"], "parser_version": config.parser_version,
        "visual_tokens": _stats([c["visual_tokens"] for c in counts]),
        "newline_tokens": _stats([c["newline_tokens"] for c in counts]),
        "layer_average_visual_tokens": _stats([c["layer_average_visual_tokens"] for c in counts]),
        "flops": flops,
        "ttft_s": _stats([m["ttft_s"] for m in measures]),
        "peak_memory_bytes": max((m["peak_memory_bytes"] or 0 for m in measures), default=None) or None,
        "device": sorted({m["device"] for m in measures}),
        "settings": run, "model": model_identity(row.checkpoint), "num_chunks": num_chunks,
    }


def matched_tokens(result: dict) -> float | None:
    """The count a row is matched on: layer average for in-LLM methods, LLM input otherwise (``None``
    when no question was answered)."""
    key = "layer_average_visual_tokens" if result["matched_on"] == "layer_average_tokens" else "visual_tokens"
    return None if result[key] is None else result[key]["mean"]


def prefill_flops(result: dict) -> float | None:
    stats = result["flops"]["llm_prefill"]
    return None if stats is None else stats["mean"]


def mark_pareto(results: list[dict]) -> None:
    """``pareto_tokens`` / ``pareto_flops``: on the front of accuracy against matched visual tokens /
    against LLM prefill FLOPs (rows without an accuracy are left out)."""
    for key, cost in (("pareto_tokens", matched_tokens), ("pareto_flops", prefill_flops)):
        scored = [r for r in results if r["headline"]["value"] is not None and cost(r) is not None]
        front = pareto_front([(cost(r), r["headline"]["value"]) for r in scored])
        for r in results:
            r[key] = False
        for r, on in zip(scored, front):
            r[key] = on


def _fmt_options(options: dict | None) -> str:
    return "" if not options else ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def markdown_table(results: list[dict], env: dict) -> str:
    """The comparison table; timing columns (TTFT, memory) are last."""
    def num(value, digits=1):
        return "n/a" if value is None else f"{value:.{digits}f}"

    def mean(stats, scale=1.0, digits=1):
        return "n/a" if stats is None else f"{stats['mean'] * scale:.{digits}f}"

    def g(stats):
        return "n/a" if stats is None else f"{stats['mean'] / 1e9:.3g}"

    def spread(stats):
        return "n/a" if stats is None else f"{stats['mean']:.1f} [{stats['min']}-{stats['max']}]"

    first = results[0]
    headline = first["headline"]["metric"]
    lines = [
        f"# Equal-budget comparison: {first['benchmark']} ({headline}, parser {first['parser_version']})", "",
        f"commit {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f"; device {', '.join(first['device'])}", "",
        "Visual tokens: LLM-input tokens per question without newline tokens (mean [min-max]); rows matched on "
        "`layer avg` (in-LLM methods) are compared on visual tokens averaged over the decoder layers. "
        "FLOPs: matmuls, GFLOP per question. `*` at floor: the method cannot reach the budget.", "",
        "| row | method | options | stage | frames | layout | budget | visual tokens | newlines | matched on | "
        "accuracy % | tower | projector | reducer | LLM prefill | Pareto (tokens/FLOPs) | TTFT ms | peak mem GiB |",
        "|---|---|---|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        budget = "" if r["target_tokens"] is None else f"{r['target_tokens']:.0f}" + ("*" if r["at_floor"] else "")
        matched = "layer avg " + mean(r["layer_average_visual_tokens"]) if (
            r["matched_on"] == "layer_average_tokens") else ("LLM input" if r["matched_on"] == "llm_input_tokens"
                                                             else r["matched_on"])
        pareto = ("T" if r["pareto_tokens"] else "-") + "/" + ("F" if r["pareto_flops"] else "-")
        memory = "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f}"
        lines.append(
            f"| {r['row']}: {r['name']} | {r['method']} | {_fmt_options(r['options'])} | {r['stage']} | "
            f"{r['num_frames']} | {r['layout']} | {budget} | {spread(r['visual_tokens'])} | "
            f"{mean(r['newline_tokens'])} | {matched} | {num(r['headline']['value'])} | "
            f"{g(r['flops']['tower'])} | {g(r['flops']['projector'])} | {g(r['flops']['reducer'])} | "
            f"{g(r['flops']['llm_prefill'])} | {pareto} | {mean(r['ttft_s'], 1e3)} | {memory} |")
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], output: Path) -> list[Path]:
    scored = [r for r in results if r["headline"]["value"] is not None and matched_tokens(r) is not None]
    if not scored:
        logger.warning("no row has an accuracy: no plots")
        return []
    metric = scored[0]["headline"]["metric"]

    def points(cost, front_key):
        return [Point(cost(r), r["headline"]["value"], r["name"], r["method"], front=r[front_key],
                      hollow=r["matched_on"] == "layer_average_tokens") for r in scored]

    return [
        scatter(points(matched_tokens, "pareto_tokens"), "visual tokens per question (LLM input; in-LLM: layer average)",
                f"{metric} %", f"{scored[0]['benchmark']}: accuracy vs visual tokens",
                output / "accuracy_vs_visual_tokens.png"),
        scatter(points(prefill_flops, "pareto_flops"), "LLM prefill FLOPs per question",
                f"{metric} %", f"{scored[0]['benchmark']}: accuracy vs prefill FLOPs",
                output / "accuracy_vs_prefill_flops.png", log_x=True),
    ]


def write_report(config: Config, num_chunks: int) -> list[dict]:
    """``results.jsonl``, ``table.md`` and the plots, from the rows' answers shards."""
    questions, fingerprint = _questions(config)
    results = [row_result(config, row, num_chunks, questions, fingerprint) for row in config.rows]
    env = environment()
    for result in results:
        result.update(env)
    mark_pareto(results)
    write_lines(config.output / "results.jsonl", results)
    (config.output / "table.md").write_text(markdown_table(results, env))
    plots = plot_results(results, config.output)
    logger.info("wrote %s, %s and %s", config.output / "results.jsonl", config.output / "table.md",
                ", ".join(str(p) for p in plots))
    return results


# ---------------------------------------------------------------------------------------------- command


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="runs.yaml (see above)")
    parser.add_argument("--preset", default=None,
                        help=f"{' | '.join(PRESETS)} | none: the equal-budget points; overrides the file's preset")
    parser.add_argument("--num-chunks", type=int, default=1, help="shards the questions of every row are split into")
    parser.add_argument("--chunk-idx", type=int, default=None,
                        help="answer only this shard (no report); without it, every shard in turn, then the report")
    parser.add_argument("--report-only", action="store_true", help="merge the shards' answers and write the report")
    return parser


def run(args: argparse.Namespace) -> int:
    load_plugins()
    config = load_config(args.config, args.preset)
    if args.num_chunks < 1:
        raise UsageError(f"--num-chunks must be >= 1, got {args.num_chunks}")
    if args.chunk_idx is not None and args.report_only:
        raise UsageError("--chunk-idx answers one shard and --report-only reports: give one of them")
    if not args.report_only:
        for chunk in ([args.chunk_idx] if args.chunk_idx is not None else range(args.num_chunks)):
            run_rows(config, args.num_chunks, chunk)
    if args.chunk_idx is None:
        results = write_report(config, args.num_chunks)
        print(json.dumps({"output": str(config.output), "rows": len(results)}))
    return 0


main = command(run, build_arg_parser())

if __name__ == "__main__":
    sys.exit(main())
