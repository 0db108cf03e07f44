"""What every benchmark shares: records, interleaved timing, peak memory, machine facts, output files.

A benchmark module exposes ``run(quick: bool, device: str) -> list[Record]``; :mod:`benchmarks.run`
calls them and writes ``results/<name>.json`` and ``results/latest.md``.

Timings are medians over repeats, and the two sides of a ratio are timed alternately in the same
process (ours, baseline, ours, baseline, ...), so that a slow spell of a noisy machine hits both.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CACHE_DIR = RESULTS_DIR / "cache"
IDS = ("P1", "P2", "P3", "P4", "P5")
_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclasses.dataclass
class Record:
    """One measured quantity, ours against a baseline.

    Attributes:
        id: ``"P1"`` .. ``"P5"``, the item of issue 8 it answers.
        measure: what was measured, in words.
        ours, baseline: the two values (``None`` where there is no baseline, or nothing measured).
        ratio: the figure the target is about; ``ratio_def`` says which way it is taken
            (``"baseline / ours"``: higher is better; ``"ours / baseline"``: lower is better).
        target: ``">= 3"`` / ``"<= 0.5"`` on ``ratio``, or None.
        unit: unit of ``ours`` and ``baseline``.
        met: whether ``ratio`` meets ``target`` (None without a target).
        note: anything a reader needs to read the numbers right.
        details: raw repeats, shapes, settings.
    """

    id: str
    measure: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str | None
    unit: str
    ratio_def: str | None = None
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id not in IDS:
            raise ValueError(f"Record.id={self.id!r}; expected one of {IDS}")
        if self.target is not None:
            if self.ratio is None:
                raise ValueError(f"Record {self.id} {self.measure!r}: a target needs a ratio")
            op, value = self.target.split()
            self.met = bool(_COMPARE[op](self.ratio, float(value)))


def compared(
    id: str, measure: str, ours: float, baseline: float, unit: str, *, lower_is_better: bool,
    target: str | None = None, note: str = "", details: dict[str, Any] | None = None,
) -> Record:
    """A :class:`Record` whose ratio is the improvement of ``ours`` over ``baseline``.

    ``lower_is_better`` (times, bytes): ratio ``baseline / ours``, so 3 means three times less. Otherwise
    (throughputs) ``ours / baseline``. Either way a higher ratio is better.
    """
    ratio = baseline / ours if lower_is_better else ours / baseline
    ratio_def = "baseline / ours" if lower_is_better else "ours / baseline"
    return Record(id, measure, ours, baseline, ratio, target, unit, ratio_def=ratio_def, note=note,
                  details=details or {})


def fraction(
    id: str, measure: str, ours: float, baseline: float, unit: str, *, target: str | None = None,
    note: str = "", details: dict[str, Any] | None = None,
) -> Record:
    """A :class:`Record` whose ratio is ``ours / baseline`` (a share or a memory fraction: lower is better)."""
    return Record(id, measure, ours, baseline, ours / baseline, target, unit, ratio_def="ours / baseline",
                  note=note, details=details or {})


# ---- timing -------------------------------------------------------------------------------------

def synchronizer(device: str) -> Callable[[], None]:
    """Waits for queued GPU work (a no-op on CPU), so that a timer sees finished work."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn ``repeats`` times after ``warmup`` rounds."""
    sync = synchronizer(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---- peak memory --------------------------------------------------------------------------------

class _StorageTracker(TorchDispatchMode):
    """Bytes of tensor storages created by ATen ops (forward and backward), live and at the peak.

    Each new storage is counted once, when an op returns it, and uncounted when it is freed (a weak
    reference on the storage). Tensors made before the tracker started (weights, inputs) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                self._count(leaf)
        return out


def peak_memory_bytes(fn: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes of tensors allocated while ``fn`` runs, above what was allocated before it.

    CUDA: the caching allocator's own peak counter. CPU: :class:`_StorageTracker` (the CPU allocator
    keeps no statistics); it slows ``fn`` down, so it is never combined with timing.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with _StorageTracker() as tracker:
        fn()
    return tracker.peak


# ---- the machine and the code -------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPUs, threads, library versions, GPU, commit."""
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is not None:
        info["git_commit"] = commit
        info["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return info


# ---- output -------------------------------------------------------------------------------------

def write_results(out_dir: Path, name: str, records: list[Record], meta: dict[str, Any]) -> Path:
    """``out_dir/<name>.json``: ``meta`` (command, machine, seconds, ...) plus the records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {**meta, "benchmark": name, "records": [dataclasses.asdict(r) for r in records]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def markdown_table(records: list[dict[str, Any]]) -> str:
    """One row per record: id, measure, ours, baseline, unit, ratio (with its direction), target, met."""
    lines = ["| id | measure | ours | baseline | unit | ratio | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        ratio = _fmt(r["ratio"]) + (f" ({r['ratio_def']})" if r.get("ratio_def") else "")
        lines.append(f"| {r['id']} | {r['measure']} | {_fmt(r['ours'])} | {_fmt(r['baseline'])} | {r['unit']} "
                     f"| {ratio} | {_fmt(r['target'])} | {_fmt(r['met'])} |")
    return "\n".join(lines)


def render_latest(out_dir: Path) -> Path:
    """``out_dir/latest.md`` from every ``*.json`` there, ordered by id: table, then notes and machines."""
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    runs = [run for run in runs if isinstance(run, dict) and "records" in run]  # other benchmarks' own files
    runs.sort(key=lambda run: min((r["id"] for r in run["records"]), default="P9"))
    records = [r for run in runs for r in run["records"]]
    parts = ["# Benchmark results", ""]
    if any(run["quick"] for run in runs):
        parts += ["Quick run (`--quick`): shapes are cut down to check that every benchmark runs; the ratios "
                  "do not answer the targets.", ""]
    parts += [markdown_table(records), ""]
    notes = [f"- **{r['id']} {r['measure']}**: {r['note']}" for r in records if r.get("note")]
    if notes:
        parts += ["## Notes", "", *notes, ""]
    parts += ["## Runs", ""]
    for run in runs:
        machine = run["machine"]
        parts.append(
            f"- `{run['benchmark']}`: `{run['command']}` at {run['finished']}, {run['seconds']:.0f} s; "
            f"{machine['platform']}, {machine['cpus_usable']} CPUs usable, {machine['torch_threads']} torch "
            f"threads, torch {machine['torch']}, GPU {machine['cuda'] or 'none'}, commit "
            f"{machine.get('git_commit', '?')}{' (uncommitted changes)' if machine.get('git_dirty') else ''}"
        )
    path = out_dir / "latest.md"
    path.write_text("\n".join(parts) + "\n")
    return path
