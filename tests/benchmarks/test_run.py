"""``python -m benchmarks.run --quick``: every benchmark runs and writes what issue 8 asks for."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest

from benchmarks.run import BENCHMARKS, main, parse_ids

FIELDS = {"id", "measure", "ours", "baseline", "ratio", "target", "unit"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, main(["--quick", "--out", str(out)])


def test_quick_run_writes_every_result(quick_run):
    out, results = quick_run
    assert list(results) == ["P1", "P2", "P3", "P4", "P5"]
    for bench_id, name in BENCHMARKS.items():
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["quick"] is True
        assert saved["command"] == "python -m benchmarks.run " + shlex.join(["--quick", "--out", str(out)])
        assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["torch"]
        assert saved["records"] and all(r["id"] == bench_id and FIELDS <= set(r) for r in saved["records"])
        for r in saved["records"]:
            assert r["ours"] is not None and r["ours"] > 0, r["measure"]
            if r["target"] is not None:
                assert r["met"] == (r["ratio"] >= float(r["target"].split()[1]) if r["target"].startswith(">=")
                                    else r["ratio"] <= float(r["target"].split()[1]))
    latest = (out / "latest.md").read_text()
    assert latest.count("| P") == sum(len(records) for records in results.values())
    assert "Quick run" in latest


def test_quick_run_numbers_are_consistent(quick_run):
    _, results = quick_run
    time_rec, memory_rec = results["P1"][:2]
    assert time_rec.details["max_abs_output_diff"] < 1e-5  # batched folded == looped textbook
    assert memory_rec.ours < memory_rec.baseline  # no V + Pos, no projected keys
    assert time_rec.details["peak_bytes"]["ours"] == memory_rec.details["peak_bytes"]["ours"]
    prefill_time, kv = results["P2"]
    tokens = kv.details["tokens"]
    assert tokens == {"hicom": 113, "onevision": 4 * 196}
    assert kv.ratio == pytest.approx(tokens["onevision"] / tokens["hicom"])
    decode, *loader = results["P3"]
    assert decode.unit == "s" and [r.unit for r in loader] == ["clips/s", "clips/s"]
    assert all(r.met for r in results["P4"])
    stages = [r.measure for r in results["P5"]]
    assert any("HICom: tower + projector" in s for s in stages) and stages[-1].endswith("all stages, cold")


def test_only_parses_ids():
    assert parse_ids("p1, P4") == ["P1", "P4"]
    with pytest.raises(argparse.ArgumentTypeError, match="P7"):
        parse_ids("P7")
