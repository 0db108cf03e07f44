"""The benchmark plumbing: records and targets, interleaved timing, the CPU peak-memory tracker, output."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.common import (
    Record, compared, fraction, interleaved_times, markdown_table, peak_memory_bytes, render_latest, write_results,
)

MIB = 2**20


def test_targets_are_judged_on_the_ratio():
    faster = compared("P1", "t", ours=1.0, baseline=4.0, unit="s", lower_is_better=True, target=">= 3")
    assert faster.ratio == 4.0 and faster.met and faster.ratio_def == "baseline / ours"
    slower = compared("P1", "t", ours=2.0, baseline=4.0, unit="s", lower_is_better=True, target=">= 3")
    assert slower.met is False
    throughput = compared("P3", "clips", ours=3.0, baseline=2.0, unit="clips/s", lower_is_better=False)
    assert throughput.ratio == 1.5 and throughput.met is None and throughput.ratio_def == "ours / baseline"
    share = fraction("P4", "share", ours=1.0, baseline=100.0, unit="GFLOP", target="<= 0.02")
    assert share.ratio == 0.01 and share.met
    with pytest.raises(ValueError, match="P6"):
        Record("P6", "x", 1.0, None, None, None, "s")
    with pytest.raises(ValueError, match="needs a ratio"):
        Record("P5", "x", 1.0, None, None, ">= 2", "s")


def test_interleaved_times_alternate_the_sides():
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_cpu_peak_memory_counts_live_tensors_only():
    def step():
        a = torch.empty(MIB // 4)  # 1 MiB
        b = torch.empty(MIB // 2)  # 2 MiB: 3 MiB live
        del a
        c = torch.empty(MIB // 4)  # 1 MiB: back to 3 MiB
        del b, c
        d = torch.ones(MIB)  # 4 MiB alone: the peak
        return d.sum()

    assert peak_memory_bytes(step) == 4 * MIB + 4  # + the 4-byte sum
    weights = torch.randn(256, 256, requires_grad=True)  # made before: not counted

    def train_step():
        (weights @ weights).square().sum().backward()

    peak = peak_memory_bytes(train_step)
    assert 2 * 256 * 256 * 4 <= peak <= 5 * 256 * 256 * 4  # product, its square, then grads


def test_results_and_latest_markdown(tmp_path):
    machine = {"platform": "p", "cpus_usable": 2, "torch_threads": 2, "torch": "t", "cuda": None, "git_commit": "abc"}
    meta = {"command": "python -m benchmarks.run --only P1", "quick": False, "seconds": 1.0, "finished": "now",
            "machine": machine}
    record = compared("P1", "time", 1.0, 3.5, "s", lower_is_better=True, target=">= 3", note="a note")
    path = write_results(tmp_path, "compressor", [record], meta)
    saved = json.loads(path.read_text())
    assert saved["records"][0]["id"] == "P1" and saved["records"][0]["met"] is True
    assert {"id", "measure", "ours", "baseline", "ratio", "target", "unit"} <= set(saved["records"][0])
    latest = render_latest(tmp_path).read_text()
    assert "| P1 | time | 1 | 3.5 | s | 3.5 (baseline / ours) | >= 3 | yes |" in latest
    assert "a note" in latest and "python -m benchmarks.run --only P1" in latest
    assert markdown_table([]).count("\n") == 1
