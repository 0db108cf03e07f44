"""Kill -9 in the middle of training, rerun the same command: it resumes from the newest complete
checkpoint and logs the same losses as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.train.llava_trainer import find_resume_checkpoint
from tests.helpers.training import REPO, logged_losses, make_synthetic_data

STEPS = 10


def command(tiny_dir: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "llava/train/train_mem.py",
            "--model_name_or_path", str(tiny_dir / "qwen2-tiny"), "--vision_tower", str(tiny_dir / "siglip-tiny"),
            "--version", "qwen_1_5", "--mm_projector_type", "hicom", "--hicom_preset", "paper",
            "--mm_tunable_parts", "mm_mlp_adapter,mm_language_model", "--mm_vision_select_layer", "-2",
            "--mm_use_im_patch_token", "False", "--data_path", str(data / "stage3.json"),
            "--image_folder", str(data), "--video_folder", str(data), "--num_frames", "4",
            "--image_aspect_ratio", "pad", "--output_dir", str(out), "--max_steps", str(STEPS),
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
            "--gradient_checkpointing", "False", "--dataloader_num_workers", "1", "--seed", "7"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_data(tmp_path_factory.mktemp("synthetic"))


def test_kill_and_rerun_resumes_with_identical_losses(tiny_dir, data, tmp_path):
    reference = tmp_path / "uninterrupted"
    subprocess.run(command(tiny_dir, data, reference), cwd=REPO, env=env(), check=True, capture_output=True)
    expected = logged_losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))
    for checkpoint in sorted(reference.glob("checkpoint-*")):  # the report first, the state last
        report, state = checkpoint / "data_report.json", checkpoint / "trainer_state.json"
        assert report.stat().st_mtime_ns <= state.stat().st_mtime_ns, checkpoint

    out = tmp_path / "killed"
    process = subprocess.Popen(command(tiny_dir, data, out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while find_resume_checkpoint(out) is None or find_resume_checkpoint(out).name == "checkpoint-2":
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "trainer_state.json").exists()  # it did not finish
    resumed_from = find_resume_checkpoint(out)
    done = int(resumed_from.name.split("-")[1])
    assert done < STEPS

    rerun = subprocess.run(command(tiny_dir, data, out), cwd=REPO, env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"resuming from {resumed_from}" in rerun.stdout + rerun.stderr
    got = logged_losses(out)
    assert sorted(got) == sorted(expected)
    for step in range(done + 1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), (step, got[step], expected[step])


def test_incomplete_checkpoint_is_ignored(tmp_path):
    good, broken = tmp_path / "checkpoint-4", tmp_path / "checkpoint-6"
    for folder in (good, broken, tmp_path / "checkpoint-10"):
        folder.mkdir()
        (folder / "data_report.json").write_text(json.dumps({"skipped": {}}))
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (broken / "trainer_state.json").write_text('{"global_st')  # killed while writing
    (tmp_path / "checkpoint-8").mkdir()  # killed before the state was written
    (tmp_path / "checkpoint-12").mkdir()  # a state without the report it resumes the counts from
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    assert find_resume_checkpoint(tmp_path) == good
    assert find_resume_checkpoint(tmp_path / "absent") is None


def test_adapter_only_run_resumes_from_its_mm_projector_checkpoint(tiny_dir, data, tmp_path):
    """Stage-1-style run: checkpoints hold mm_projector.bin instead of model weights; rerunning after
    the newest checkpoint is lost resumes from the previous one with the same losses."""
    out = tmp_path / "adapter"
    cmd = command(tiny_dir, data, out)
    cmd[cmd.index("mm_mlp_adapter,mm_language_model")] = "mm_mlp_adapter"
    cmd[cmd.index("--max_steps") + 1] = "4"
    subprocess.run(cmd, cwd=REPO, env=env(), check=True, capture_output=True)
    expected = logged_losses(out)
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "mm_projector.bin").is_file() and not list(checkpoint.glob("model*.safetensors"))
    shutil.rmtree(out / "checkpoint-4")
    (out / "trainer_state.json").unlink()
    rerun = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"resuming from {checkpoint}" in rerun.stdout + rerun.stderr
    got = logged_losses(out)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
