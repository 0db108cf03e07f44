"""The toy zoo: rows come from the plugins (every registered method has one), every trained row's last
stage gets the same budget, and the quick profile runs the whole table (train, harness, aggregate,
pictures) end to end, then reuses its cached runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.model.multimodal_projector.builder import PROJECTORS, register_projector
from llava.toy import zoo
from llava.toy.zoo import PROFILES, Budget, all_rows, rowless_methods, select_rows, stage_command

# table order: plugins by name; merv: a tower of four encoders ({encoder: pixels}) through the harness
QUICK_ROWS = ["onevision_pool2", "bvllm", "cond_local_global", "merv", "pool2d", "fastv"]


def _flag(argv: list[str], name: str) -> str:
    """The value argparse keeps: the last one given."""
    values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]
    assert values, (name, argv)
    return values[-1]


# ---- rows ------------------------------------------------------------------------------------------


def test_every_registered_method_has_a_row():
    assert rowless_methods(all_rows()) == []
    shown = {method for row in all_rows() for method in row.methods}
    assert {"hicom", "bvllm", "merv", "disco", "pool2d", "fastv", "dycoke_kv"} <= shown


class _RowlessProjector:  # stands for a projector of an installed plugin package that declares no toy row
    pass


_RowlessProjector.__module__ = "reducers_plugin.zoo_test"  # what makes a class a plugin's: its package


def test_a_method_without_a_row_is_reported():
    register_projector("zoo_test_rowless")(_RowlessProjector)
    try:
        assert rowless_methods(all_rows()) == ["projector zoo_test_rowless"]
    finally:
        PROJECTORS.unregister("zoo_test_rowless")
    assert rowless_methods(all_rows()) == []


def test_rows_have_one_reference_and_the_headline_subset():
    rows = all_rows()
    assert [row.name for row in rows if row.reference] == ["onevision"] == [rows[0].name]
    assert len({row.name for row in rows}) == len(rows)
    headline = [row.name for row in select_rows(rows, "headline", None)]
    assert {"onevision", "avgpool_433", "cond_local_global"} <= set(headline) < {row.name for row in rows}
    # a named row brings the reference with it, in table order
    assert [row.name for row in select_rows(rows, "all", ["pool2d", "bvllm"])] == ["onevision", "bvllm", "pool2d"]
    with pytest.raises(ValueError, match="unknown toy row"):
        select_rows(rows, "all", ["no_such_row"])


def _job(row, tmp_path: Path, budget: Budget, seed: int = 3) -> dict:
    return {"row": row.name, "seed": seed, "run_dir": str(tmp_path / "runs" / row.name), "data": str(tmp_path / "data"),
            "tiny": str(tmp_path / "tiny"), "llm": str(tmp_path / "tiny" / "llm"), "vision": str(tmp_path / "tiny" / "vit"),
            "budget": dataclasses.asdict(budget), "env": {**dict(row.env), "TOWER": str(tmp_path / "tower")},
            "declaration": {"name": row.name, "label": row.label, "methods": list(row.methods),
                            "stages": [dataclasses.asdict(s) for s in row.stages]}}


def test_every_trained_row_ends_with_the_same_instruction_tuning(tmp_path):
    budget = PROFILES["default"]
    trained = [row for row in all_rows() if row.stages]
    assert len(trained) >= 9
    finals = {}
    for row in trained:
        job = _job(row, tmp_path, budget)
        argvs = [stage_command(job, stage) for stage in range(1, len(row.stages) + 1)]
        assert _flag(argvs[0], "--model_name_or_path") == job["llm"]  # the shared pre-trained LLM
        for argv in argvs:
            assert _flag(argv, "--num_frames") == str(budget.num_frames)
            assert _flag(argv, "--seed") == "3" and _flag(argv, "--gradient_accumulation_steps") == "1"
            assert _flag(argv, "--warmup_ratio") == str(budget.warmup_ratio)
            assert "--deepspeed" not in argv and _flag(argv, "--output_dir").startswith(job["run_dir"])
        for argv in argvs[:-1]:  # the method's adapter stages: one epoch each
            assert _flag(argv, "--num_train_epochs") == "1"
            assert _flag(argv, "--per_device_train_batch_size") == str(budget.adapter_batch)
        final = argvs[-1]
        assert "mm_language_model" in _flag(final, "--mm_tunable_parts").split(",")
        finals[row.name] = {name: _flag(final, name) for name in (
            "--data_path", "--num_train_epochs", "--per_device_train_batch_size", "--learning_rate",
            "--mm_projector_lr", "--seed", "--num_frames")}
    assert len({json.dumps(final, sort_keys=True) for final in finals.values()}) == 1, finals
    final = next(iter(finals.values()))
    assert final["--data_path"] == str(tmp_path / "data" / "stage3_mcqa.json")
    assert (final["--num_train_epochs"], final["--learning_rate"]) == (str(budget.epochs), str(budget.lr))


def test_harness_config_puts_reducers_on_the_reference_at_the_budget(tmp_path, monkeypatch):
    rows = select_rows(all_rows(), "all", ["cond_local_global", "pool2d", "dycoke_kv", "fastv"])
    checkpoints = {"onevision": "runs/ref", "cond_local_global": "runs/hicom"}  # relative, as the runs record them
    monkeypatch.chdir(tmp_path)
    config = zoo.harness_config(rows, checkpoints, Path("data"), Path("out"), PROFILES["default"])
    ref = str(tmp_path / "runs" / "ref")
    assert config["question_file"] == str(tmp_path / "data" / "eval" / "json")  # absolute: the harness reads
    assert config["output"] == str(tmp_path / "out")                            # relative paths from its file's folder
    entries = {entry["name"]: entry for entry in config["rows"]}
    assert entries["onevision"] == {"name": "onevision", "checkpoint": ref, "method": "none"}
    assert entries["cond_local_global"]["method"] == "trained"
    assert entries["pool2d"]["checkpoint"] == ref and entries["pool2d"]["budget"] == 20
    assert entries["fastv"]["options"] == {"layer": 1} and entries["fastv"]["budget"] == 20
    assert "budget" not in entries["dycoke_kv"]  # acts while decoding: no budget to set


# ---- the quick profile, end to end ------------------------------------------------------------------


def recomputed_accuracy(merged: Path, data: Path) -> float:
    """Percent of the eval questions whose saved reply gives the right letter (MVBench's parser)."""
    from llava.eval.questions import LETTERS
    from llava.eval.scoring import mvbench_letter
    from llava.toy.synthetic import EVAL_TASK_FILE

    replies = {r["question_id"]: r for r in map(json.loads, merged.read_text().splitlines())}
    items = json.loads((data / "eval" / "json" / EVAL_TASK_FILE).read_text())
    stem = Path(EVAL_TASK_FILE).stem
    right = 0
    for index, item in enumerate(items):
        reply = replies.get(f"{stem}/{index}", {}).get("text")
        right += reply is not None and mvbench_letter(reply) == LETTERS[item["candidates"].index(item["answer"])]
    return 100.0 * right / len(items)


def test_quick_zoo_end_to_end_and_cached(tmp_path, tiny_llava_dir):
    from PIL import Image

    tiny_dir = tiny_llava_dir.parent
    out = tmp_path / "zoo"
    argv = ["--out", str(out), "--tiny", str(tiny_dir), "--profile", "quick", "--rows", *QUICK_ROWS, "--workers", "2"]
    assert zoo.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == ["onevision", *QUICK_ROWS]
    harness = {json.loads(line)["name"]: json.loads(line)
               for line in (out / "compare" / "seed0" / "results.jsonl").read_text().splitlines()}
    quick = PROFILES["quick"]
    for r in results:
        assert r["seeds"] == [0] and r["acc_std"] is None
        # recomputed from the harness's merged answers and the question file, not read back
        key = f"{harness[r['name']]['row']:02d}-{r['name']}"
        merged = out / "compare" / "seed0" / "rows" / key / "merged.jsonl"
        assert r["acc_mean"] == round(recomputed_accuracy(merged, out / "data"), 2)
        assert harness[r["name"]]["questions"] == quick.eval_videos
        assert set(r["gflops"]) == {"tower", "projector", "reducer", "llm_prefill"}
        assert r["gflops"]["llm_prefill"] > 0
    by_name = {r["name"]: r for r in results}
    assert by_name["onevision"]["tokens"] == 8 * 49 and by_name["onevision"]["token_share"] == 1.0  # every patch
    assert by_name["onevision_pool2"]["tokens"] == 8 * 16  # OneVision's 2 x 2 video pooling, a row of its own
    assert by_name["cond_local_global"]["tokens"] == 20 and by_name["bvllm"]["tokens"] == 20
    assert by_name["pool2d"]["tokens"] <= quick.tokens and by_name["pool2d"]["kind"] == "training-free"
    assert by_name["fastv"]["matched_on"] == "layer_average_tokens"
    assert by_name["cond_local_global"]["gflops"]["llm_prefill"] < by_name["onevision"]["gflops"]["llm_prefill"]
    # every trained run's stages ran their 2 quick steps, logged per run
    runs = json.loads((out / "runs.json").read_text())
    assert sorted(r["row"] for r in runs) == sorted(["onevision", "onevision_pool2", "cond_local_global", "bvllm", "merv"])
    for run in runs:
        assert all(stage["steps"] == quick.max_steps for stage in run["stages"].values())
        assert (out / "runs" / run["row"] / "seed0" / "run.log").is_file()
    table = (out / "results.md").read_text()
    assert all(f"`{name}`" in table for name in by_name) and "single seed" in table
    assert by_name["merv"]["tokens"] == 18 and by_name["merv"]["gflops"]["tower"] > 0
    for path in [out / "pareto.png", out / "accuracy.png",
                 *(out / "pictures" / f"{name}.png" for name in ["cond_local_global", "bvllm", "merv", "pool2d", "fastv"])]:
        with Image.open(path) as image:
            assert image.size[0] > 0 and image.size[1] > 0
    assert statistics.fmean(r["acc_mean"] for r in results) >= 0

    results_bytes = (out / "results.json").read_bytes()
    done = {p: p.stat().st_mtime_ns for p in [*(out / "runs").glob("*/seed0/done.json"),
                                             out / "compare" / "seed0" / "done.json"]}
    assert len(done) == 6  # five trained runs and the harness pass
    assert zoo.main([*argv, "--no-pictures"]) == 0
    assert (out / "results.json").read_bytes() == results_bytes
    assert {p: p.stat().st_mtime_ns for p in done} == done  # nothing trained or answered again


def test_shared_starts_can_begin_every_row_from_the_pretrained_llm(tmp_path, tiny_dir):
    """The LLM start is pre-trained in a worker (its log kept) while the tower and the data are made, and
    its record enters the runs' fingerprints; ``--pretrain-steps 0`` starts from the random tiny LLM."""
    import dataclasses as dc

    tiny = tmp_path / "tiny"
    shutil.copytree(tiny_dir, tiny, ignore=shutil.ignore_patterns("siglip-tiny-lit", "qwen2-tiny-tiles"))
    budget = PROFILES["quick"]
    assert budget.pretrain_steps == 2 and PROFILES["default"].pretrain_steps > 0  # every profile pre-trains
    pool = zoo._Pool(1)
    try:
        starts = zoo.shared_starts(pool, tiny, tmp_path / "data", budget)
    finally:
        pool.close()
    assert starts["llm"] == str(tiny / "qwen2-tiny-tiles") and (tiny / "pretrain.log").is_file()
    assert starts["records"]["llm"]["steps"] == 2 and starts["identity"]["llm"]["settings"]["steps"] == 2
    assert (tmp_path / "data" / "stage3_mcqa.json").is_file()
    pool = zoo._Pool(1)
    try:
        scratch = zoo.shared_starts(pool, tiny, tmp_path / "data", dc.replace(budget, pretrain_steps=0))
    finally:
        pool.close()
    assert scratch["llm"] == str(tiny / "qwen2-tiny") and scratch["identity"]["llm"] != starts["identity"]["llm"]


def test_llm_pretraining_uses_every_core_then_hands_the_worker_back_its_share(tmp_path, monkeypatch):
    import torch

    from llava.toy import tiny_pretrain

    seen = []

    def fake_pretraining(tiny, settings, progress=False):
        seen.append((torch.get_num_threads(), settings.steps))
        return Path(tiny) / "qwen2-tiny-tiles"

    monkeypatch.setattr(tiny_pretrain, "make_pretrained_llm", fake_pretraining)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's share of the cores
    try:
        folder = zoo.pretrain_llm({"tiny": str(tmp_path), "steps": 7, "log": str(tmp_path / "pretrain.log")})
        assert torch.get_num_threads() == 1  # the worker trains its rows on its share again
    finally:
        torch.set_num_threads(threads)
    assert seen == [(os.cpu_count(), 7)] and folder == str(tmp_path / "qwen2-tiny-tiles")


# ---- workers ----------------------------------------------------------------------------------------


class _Recorder(list):
    put = list.append  # the one Queue method the progress callback uses


def test_training_reports_progress_through_the_callback(tmp_path, tiny_dir):
    """``train(callbacks=...)`` hands the callback to the trainer: one report per optimizer step."""
    from llava.toy.synthetic import make_dataset
    from llava.toy.tiny_lit import LitSettings, make_lit_siglip
    from llava.train.train import train

    quick = PROFILES["quick"]
    make_dataset(tmp_path / "data", **quick.dataset_args())
    vision = make_lit_siglip(tiny_dir, LitSettings(steps=quick.lit_steps))
    job = _job(zoo.REFERENCE, tmp_path, quick, seed=0)
    job.update(llm=str(tiny_dir / "qwen2-tiny"), vision=str(vision), tiny=str(tiny_dir))
    reports = _Recorder()
    trainer = train(argv=stage_command(job, 1), callbacks=[zoo._progress_callback(reports, "onevision/seed0", 0)])
    assert trainer.state.global_step == quick.max_steps == 2
    assert reports == [("onevision/seed0", 0, 0.5), ("onevision/seed0", 0, 1.0)]


def test_a_report_left_over_from_an_earlier_phase_is_ignored():
    """A worker's last report of a phase can reach the queue after its job's result: the next phase's run
    must not take it for one of its own jobs."""
    pool = zoo._Pool(1)
    try:
        pool.queue.put(("harness/seed0/shard1", 0, 1.0))
        results, failures = pool.run(len, [{"key": "picture/a"}], {"picture/a": ["drawing"]})
    finally:
        pool.close()
    assert (results, failures) == ([1], []) and pool.bar.n == pool.bar.total == 1


_ORPHAN_SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from llava.toy import zoo

def report_and_wait(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=zoo._init_worker,
                               initargs=(context.Queue(), 1, os.getpid()))
    pool.submit(report_and_wait, sys.argv[1])
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_end_when_the_zoo_is_killed(tmp_path):
    """SIGTERM to the zoo's process (a scheduler's or `pkill`'s) must not leave a run training."""
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=Path(zoo.REPO))
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the worker never started"
            assert parent.poll() is None, "the parent script failed"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived the killed zoo"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(") ", 1)[1][0] != "Z"
