"""Running the real training scripts on tiny checkpoints and synthetic data, for tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_SCRIPTS = REPO / "scripts" / "train" / "tiny"
STAGE_SCRIPTS = {1: "stage1_align.sh", 2: "stage2_conditional_pretrain.sh", 3: "stage3_instruction_tuning.sh"}


def make_synthetic_data(out: Path) -> Path:
    """A small synthetic dataset (8 frames of 64x64 per video), once per folder."""
    from llava.toy.synthetic import make_dataset

    if not (out / "stage3.json").is_file():
        make_dataset(out, seed=0, videos=8, images=4, frames=8, size=64)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_env(tiny_dir: Path, data_dir: Path, out: Path, **overrides) -> dict[str, str]:
    """Environment for ``scripts/train/tiny/*.sh`` pointing at test folders."""
    env = dict(os.environ)
    env.update(TINY=str(tiny_dir), FOLDER=str(data_dir), OUT=str(out), PYTHON=sys.executable,
               PORT=str(free_port()), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_stage(stage: int, env: dict[str, str], timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(TINY_SCRIPTS / STAGE_SCRIPTS[stage])], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"stage {stage} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def logged_losses(output_dir: Path) -> dict[int, float]:
    """``{step: loss}`` from the run's ``trainer_state.json``."""
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
