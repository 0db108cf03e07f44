"""The Table 4 ablation demo: the stage flags come from the tiny scripts, every row's overrides are a
valid HICom config, and the quick profile runs the whole pipeline (train, evaluate, aggregate, plot)
in the test suite, then reuses its cached runs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hicom_plugin.config import HIComConfig, resolve_hicom_config
from hicom_plugin.tools import demo
from hicom_plugin.tools.demo import PROFILES, ROW_NAMES, ROWS, aggregate, stage_argv
from llava.toy.tiny_lit import LIT_DIRNAME

EXPECTED_ROWS = ("avgpool_433", "uncond_local", "cond_local", "cond_global", "cond_local_global", "onevision_2x2")


# ---- flags from the tiny stage scripts --------------------------------------------------------------


@pytest.fixture
def env_and_run_dir(tmp_path) -> tuple[dict[str, str], Path, Path]:
    data, run_dir = tmp_path / "data", tmp_path / "runs" / "cond_local" / "seed0"
    job = {"budget": dataclasses.asdict(PROFILES["quick"]), "data": str(data), "tiny": str(tmp_path / "tiny"),
           "row": "cond_local", "seed": 0}
    return demo._stage_env(job, run_dir), run_dir, data


def _flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


def test_stage_argv_reads_the_tiny_scripts(env_and_run_dir):
    env, run_dir, data = env_and_run_dir
    quick = PROFILES["quick"]
    argvs = {stage: stage_argv(stage, env, []) for stage in (1, 2, 3)}
    for stage, argv in argvs.items():
        assert argv[0].startswith("--")  # the script path itself is dropped
        assert "--deepspeed" not in argv  # DS_CONFIG="": in-process training without DeepSpeed
        assert _flag(argv, "--output_dir") == f"{run_dir}/stage{stage}"
        # stage 3 trains on the benchmark-format turns alone
        assert _flag(argv, "--data_path") == str(data / ("stage3_mcqa.json" if stage == 3 else f"stage{stage}.json"))
        assert _flag(argv, "--num_frames") == str(quick.num_frames)
        assert _flag(argv, "--mm_projector_type") == "hicom"
        assert _flag(argv, "--hicom_preset") == demo.PRESET == "release"
        assert _flag(argv, "--per_device_train_batch_size") == str(quick.batch[stage - 1])
        assert _flag(argv, "--gradient_accumulation_steps") == "1"
        assert _flag(argv, "--learning_rate") == str(quick.learning_rates[stage - 1])
        assert _flag(argv, "--run_name") == f"demo-cond_local-seed0-stage{stage}"
        assert _flag(argv, "--model_name_or_path").endswith("qwen2-tiny")
        assert _flag(argv, "--vision_tower") == str(Path(env["TINY"]) / LIT_DIRNAME)  # the LiT-tuned SigLIP
    assert _flag(argvs[1], "--use_guide") == "off"
    assert _flag(argvs[1], "--version") == "plain"
    assert "--pretrain_mm_mlp_adapter" not in argvs[1]
    assert _flag(argvs[2], "--version") == "qwen_1_5"
    assert _flag(argvs[2], "--pretrain_mm_mlp_adapter") == f"{run_dir}/stage1/mm_projector.bin"
    assert _flag(argvs[2], "--guide_injector_lr") == str(quick.injector_lr)
    assert _flag(argvs[3], "--pretrain_mm_mlp_adapter") == f"{run_dir}/stage2/mm_projector.bin"


def test_stage_argv_appends_extra_args_intact(env_and_run_dir):
    env, _, _ = env_and_run_dir
    overrides = json.dumps({"local_kernel": [4, 3, 3], "note": "a \"quoted\" [b] $x * {c}"}, separators=(",", ":"))
    extra = ["--max_steps", "2", "--hicom_overrides", overrides]
    for stage in (1, 2, 3):
        argv = stage_argv(stage, env, extra)
        assert argv[-len(extra):] == extra
        assert json.loads(_flag(argv, "--hicom_overrides")) == json.loads(overrides)


def test_stage_argv_reports_a_failing_script(env_and_run_dir):
    env, _, _ = env_and_run_dir
    with pytest.raises(RuntimeError, match="LAUNCHER"):
        stage_argv(1, {**env, "LAUNCHER": "nonsense"}, [])


def test_stage_command_is_the_script_flags_plus_the_row(tmp_path):
    quick = PROFILES["quick"]
    job = {"budget": dataclasses.asdict(quick), "data": str(tmp_path / "data"), "tiny": str(tmp_path / "tiny"),
           "row": "cond_local_global", "seed": 3}
    run_dir = tmp_path / "run"
    row = demo._row("cond_local_global")
    for stage in (1, 2, 3):
        expected = stage_argv(stage, demo._stage_env(job, run_dir), demo._stage_extra(row, stage, quick, 3))
        assert demo.stage_command(job, run_dir, stage) == expected
    # alone: stage 3 without stage 2's projector, everything else the same
    full, alone = demo.stage_command(job, run_dir, 3), demo.stage_command(job, run_dir, 3, alone=True)
    at = full.index("--pretrain_mm_mlp_adapter")
    assert alone == full[:at] + full[at + 2:]
    assert demo.stage_command(job, run_dir, 1, alone=True) == demo.stage_command(job, run_dir, 1)


def test_demo_extra_flags_carry_the_row_overrides():
    quick = PROFILES["quick"]
    for row in ROWS:
        for stage in (1, 2, 3):
            extra = demo._stage_extra(row, stage, quick, seed=5)
            assert _flag(extra, "--seed") == "5"
            assert _flag(extra, "--max_steps") == str(quick.max_steps)
            # the projector's own rate applies to stage 3 only (stages 1-2 train it at the stage's rate)
            if stage == 3:
                assert _flag(extra, "--mm_projector_lr") == str(quick.projector_lr)
            else:
                assert "--mm_projector_lr" not in extra
            if row.overrides is None:
                assert "--hicom_overrides" not in extra
                assert extra[extra.index("--mm_projector_type") + 1] == "mlp2x_gelu"
            else:
                assert json.loads(_flag(extra, "--hicom_overrides")) == row.stage_overrides(stage)


# ---- rows -------------------------------------------------------------------------------------------


def test_rows_are_the_table_4_ablation():
    assert ROW_NAMES == EXPECTED_ROWS
    assert len({row.label for row in ROWS}) == len(ROWS)


def test_stage_one_trains_without_injection_and_later_stages_keep_the_row():
    for row in ROWS:
        if row.overrides is None:
            assert row.name == "onevision_2x2"
            assert all(row.stage_overrides(stage) is None for stage in (1, 2, 3))
            continue
        first = row.stage_overrides(1)
        assert first["local_injection"] == "none" and first["global_injection"] == "none"
        assert {k: v for k, v in first.items() if not k.endswith("_injection")} == \
            {k: v for k, v in row.overrides.items() if not k.endswith("_injection")}
        assert row.stage_overrides(2) == row.overrides
        assert row.stage_overrides(3) == row.overrides
    conditional = {row.name for row in ROWS if row.overrides and
                   {row.overrides["local_injection"], row.overrides["global_injection"]} != {"none"}}
    assert conditional == {"cond_local", "cond_global", "cond_local_global"}


def test_every_row_builds_a_valid_hicom_config():
    configs = {}
    for row in ROWS:
        if row.overrides is None:
            continue
        for stage in (1, 2, 3):
            config = resolve_hicom_config(demo.PRESET).replace(**row.stage_overrides(stage))
            assert isinstance(config, HIComConfig)
            assert HIComConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        configs[row.name] = resolve_hicom_config(demo.PRESET, **row.overrides)
    assert configs["avgpool_433"].local_mode == "average"
    # every row groups like the synthetic blocks (padding, not overlap); the instruction reaches the
    # local queries as the release does it: SigLIP's dense keys, the text embedding added unmapped
    assert {config.group_scheme for config in configs.values()} == {"pad"}
    for name in ("cond_local", "cond_local_global"):
        assert configs[name].needs_dense_embeds and not configs[name].direct_mlp
    assert not any(configs[name].needs_dense_embeds for name in ("avgpool_433", "uncond_local", "cond_global"))
    assert not configs["uncond_local"].uses_text and not configs["avgpool_433"].uses_text
    assert configs["cond_local"].uses_text and configs["cond_local_global"].uses_text
    assert configs["cond_global"].local_kernel is None and configs["cond_global"].num_global_queries > 0
    tokens = {name: config.num_output_tokens(8, 7, 7) for name, config in configs.items()}
    assert tokens["avgpool_433"] == tokens["uncond_local"] == tokens["cond_local"] == 2 * 3 * 3
    assert tokens["cond_local_global"] == tokens["cond_local"] + tokens["cond_global"]


def test_aggregate_means_and_stds_in_row_order():
    def record(row, seed, accuracy, tokens=18):
        return {"row": row, "seed": seed, "accuracy": accuracy, "tokens": tokens}

    rows = aggregate([record("cond_local", 1, 50.0), record("avgpool_433", 0, 25.0), record("cond_local", 0, 40.0),
                      record("cond_local", 2, 60.0)])
    assert [r["name"] for r in rows] == ["avgpool_433", "cond_local"]
    assert rows[0] == {"name": "avgpool_433", "tokens": 18, "acc_mean": 25.0, "acc_std": 0.0, "seeds": [0]}
    assert rows[1] == {"name": "cond_local", "tokens": 18, "acc_mean": 50.0, "acc_std": 10.0, "seeds": [0, 1, 2]}


# ---- the quick pipeline, end to end ------------------------------------------------------------------


class _Recorder(list):
    put = list.append  # the one Queue method the progress callback uses


def test_training_reports_progress_through_the_callback(tmp_path, tiny_dir):
    """``train(callbacks=...)`` hands the callback to the trainer: one report per optimizer step."""
    from llava.toy.synthetic import make_dataset
    from llava.toy.tiny_lit import LitSettings, make_lit_siglip
    from llava.train.train import train

    quick = PROFILES["quick"]
    make_dataset(tmp_path / "data", **quick.dataset_args())
    make_lit_siglip(tiny_dir, LitSettings(steps=quick.lit_steps))
    job = {"budget": dataclasses.asdict(quick), "data": str(tmp_path / "data"), "tiny": str(tiny_dir),
           "row": "avgpool_433", "seed": 0}
    argv = demo.stage_command(job, tmp_path / "run", 1)
    reports = _Recorder()
    trainer = train(argv=argv, callbacks=[demo._progress_callback(reports, "avgpool_433/seed0", 0)])
    assert trainer.state.global_step == quick.max_steps == 2
    assert reports == [("avgpool_433/seed0", 0, 0.5), ("avgpool_433/seed0", 0, 1.0)]


def recomputed_accuracy(answers: Path, data: Path) -> float:
    """Percent of the eval questions whose saved reply gives the right letter (MVBench's parser); a
    question without a reply counts as wrong."""
    from llava.eval.answers import read_answers
    from llava.eval.questions import LETTERS
    from llava.eval.scoring import mvbench_letter
    from llava.toy.synthetic import EVAL_TASK_FILE

    replies = read_answers(answers)
    items = json.loads((data / "eval" / "json" / EVAL_TASK_FILE).read_text())
    stem = Path(EVAL_TASK_FILE).stem
    right = 0
    for index, item in enumerate(items):
        reply = replies.get(f"{stem}/{index}", {}).get("text")
        right += reply is not None and mvbench_letter(reply) == LETTERS[item["candidates"].index(item["answer"])]
    return 100.0 * right / len(items)


def test_quick_demo_end_to_end_and_cached(tmp_path, tiny_llava_dir):
    from PIL import Image

    # the session's tiny checkpoints, all parts built (the demo's make_all then skips every part; it
    # only adds the LiT-tuned SigLIP to the shared folder); skipped while the LLaVA assembler is missing
    tiny_dir = tiny_llava_dir.parent
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--tiny", str(tiny_dir), "--profile", "quick", "--workers", "2"]

    assert demo.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert [row["name"] for row in results] == list(EXPECTED_ROWS)
    for row in results:
        assert set(row) == {"name", "tokens", "acc_mean", "acc_std", "seeds"}
        assert isinstance(row["tokens"], int) and not isinstance(row["tokens"], bool) and row["tokens"] > 0
        assert row["seeds"] == [0]
        # recomputed from the saved answers and the question file, not read back
        assert row["acc_mean"] == round(recomputed_accuracy(out / "runs" / row["name"] / "seed0" / "eval"
                                                            / "answers.jsonl", out / "data"), 2)
    tokens = {row["name"]: row["tokens"] for row in results}
    assert tokens["avgpool_433"] == tokens["uncond_local"] == tokens["cond_local"]
    assert tokens["cond_local_global"] == tokens["cond_local"] + tokens["cond_global"]
    assert tokens["onevision_2x2"] > max(v for k, v in tokens.items() if k != "onevision_2x2")

    runs = json.loads((out / "runs.json").read_text())
    quick = PROFILES["quick"]
    assert sorted((r["row"], r["seed"]) for r in runs) == sorted((name, 0) for name in EXPECTED_ROWS)
    for run in runs:
        assert run["questions"] == quick.eval_videos
        assert sorted(run["stages"]) == ["1", "2", "3"]
        assert all(stage["steps"] == quick.max_steps for stage in run["stages"].values())
        assert (out / "runs" / run["row"] / "seed0" / "run.log").is_file()
        accuracy = {r["name"]: r["acc_mean"] for r in results}[run["row"]]
        assert accuracy == round(run["accuracy"], 2)
    table = (out / "results.md").read_text()
    assert all(f"`{name}`" in table for name in EXPECTED_ROWS)
    for name in ("ablation.png", "attention.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.size[0] > 0 and image.size[1] > 0

    results_bytes = (out / "results.json").read_bytes()
    done_mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed0/done.json")}
    assert len(done_mtimes) == len(EXPECTED_ROWS)
    assert demo.main(argv) == 0
    assert (out / "results.json").read_bytes() == results_bytes
    # no run was trained again: every run's done.json is untouched
    assert {p: p.stat().st_mtime_ns for p in done_mtimes} == done_mtimes


def test_dataset_is_rebuilt_when_the_generator_changes(tmp_path, monkeypatch):
    import llava.toy.synthetic

    quick, folder = PROFILES["quick"], tmp_path / "data"
    demo.prepare_data(folder, quick)
    stamp = folder / "dataset.json"
    written = stamp.stat().st_mtime_ns
    demo.prepare_data(folder, quick)
    assert stamp.stat().st_mtime_ns == written  # same generator, same arguments: reused
    monkeypatch.setattr(llava.toy.synthetic, "GENERATOR_VERSION", llava.toy.synthetic.GENERATOR_VERSION + 1)
    demo.prepare_data(folder, quick)
    assert json.loads(stamp.read_text())["generator_version"] == llava.toy.synthetic.GENERATOR_VERSION
    assert (folder / "stage3.json").is_file()


_ORPHAN_SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from hicom_plugin.tools import demo

def report_and_wait(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=demo._init_worker,
                               initargs=(context.Queue(), 1, os.getpid()))
    pool.submit(report_and_wait, sys.argv[1])
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_end_when_the_demo_is_killed(tmp_path):
    """SIGTERM to the demo process (a scheduler's or `pkill`'s) must not leave a run training."""
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=Path(demo.REPO))
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
            assert time.monotonic() < deadline, f"worker {worker} outlived the killed demo"
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
