"""The shell drivers: they parse, refuse a missing checkpoint argument, and one runs end to end over two
"GPUs" (two chunk processes on the CPU): its merged answers equal one in-process run's (sampling with
per-question seeds), and it scores them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import model_video_mcqa
from tests.helpers import eval_fixtures as fx

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts/eval/video"
DRIVERS = sorted(SCRIPTS.glob("eval_video_*.sh"))


def test_every_benchmark_has_a_driver():
    names = {p.stem for p in DRIVERS}
    assert names == {f"eval_video_mcqa_{b}" for b in ("videomme", "mvbench", "egoschema", "mlvu")} | {
        "eval_video_oqa_activitynet", "eval_video_oqa_vcgpt"}


@pytest.mark.parametrize("script", [*DRIVERS, SCRIPTS / "_common.sh"], ids=lambda p: p.name)
def test_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_checkpoint_argument():
    result = subprocess.run(["bash", str(SCRIPTS / "eval_video_mcqa_mlvu.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_mlvu_driver_on_two_chunks_equals_one_process(tiny_hicom, tmp_path):
    data = fx.write_mlvu(tmp_path / "MLVU")
    flags = "--device cpu --temperature 1.0 --seed 3"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "EVAL_DATA_DIR": str(tmp_path / "MLVU"),
           "OUTPUT_DIR": str(tmp_path / "out"), "NUM_FRAMES": "4", "MAX_NEW_TOKENS": "4", "PYTHON": sys.executable,
           "EXTRA_ARGS": flags, "PARSER_VERSION": "current", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(SCRIPTS / "eval_video_mcqa_mlvu.sh"), str(tiny_hicom)], env=env,
                            cwd=SCRIPTS.parents[2], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = tmp_path / "out/answers" / tiny_hicom.name
    assert [len((answers / f"2_{k}.jsonl").read_text().splitlines()) for k in range(2)] == [2, 1]
    merged = (answers / "merge.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in merged] == ["1_plotQA/0", "1_plotQA/1", "4_count/0"]
    report = json.loads((answers / "report_current.json").read_text())
    assert report["questions"] == 3 and report["parser_version"] == "current" and "M-Avg" in result.stdout

    single = tmp_path / "single.jsonl"  # one torch thread here too (conftest): identical arithmetic
    assert model_video_mcqa.main(["--model-path", str(tiny_hicom), *data.args(), "--video-folder",
                                  str(data.video_folder), "--answers-file", str(single), "--num-frames", "4",
                                  "--max-new-tokens", "4", *flags.split()]) == 0
    assert merged == single.read_text().splitlines()
    assert len({json.loads(line)["text"] for line in merged}) > 1  # sampled: the comparison is not vacuous
