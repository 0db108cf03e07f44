"""The ``lmms_eval`` command line end to end (when the ``eval`` extra is installed: ``make eval-deps``): a tiny
HICom checkpoint exported with ``llava.export``, a local multiple-choice video task (JSON data, ``--include_path``),
stock ``--model llava_vid`` on the CPU, offline. The saved results must hold what our model answers in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.videos import write_test_video

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (make eval-deps)")

TASK = "tiny_local_mcq"
LETTERS = ("A", "B", "C", "D")
FRAMES = 4
QUESTIONS = ("Where does the square go?", "Which way does it move?", "Where is it at the end?")  # --limit 2: two
OPTIONS = ["A. up", "B. down", "C. left", "D. right"]
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
OVERWRITE = {"mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "average", "mm_pooling_position": "before",
             "mm_newline_position": "grid", "delay_load": False}  # what llava_vid passes with its defaults

TASK_UTILS = '''
from pathlib import Path

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return [str(HERE / doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    body = doc["question"] + "\\n" + "\\n".join(doc["options"])
    return kwargs.get("pre_prompt", "") + body + kwargs.get("post_prompt", "")


def process_results(doc, results):
    letter = extract_mcq_answer(results[0].strip(), choices=["A", "B", "C", "D"])
    return {"mcq_accuracy": float(letter == doc["answer"])}
'''

TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 1
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: mcq_accuracy
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: {post_prompt}
metadata:
  version: 0.0
"""


def _letters_only(folder: Path) -> None:
    """Makes the tied embedding rows of the letters A-D +-v and +-w (large), so that the greedy next token is one
    of the four letters (a random tiny model otherwise replies with tokens that decode to nothing)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(list(LETTERS))
    assert len(set(ids)) == 4, ids
    path = folder / "model.safetensors"
    weights = load_file(path)
    rows = weights["model.embed_tokens.weight"]
    gen = torch.Generator().manual_seed(0)
    v, w = torch.randn(2, rows.shape[1], generator=gen) * 50 * rows.norm(dim=1).mean()
    rows[ids] = torch.stack([v, -v, w, -w]).to(rows.dtype)
    save_file(weights, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def exported(tiny_hicom, tmp_path_factory) -> Path:
    from llava.export import export

    out = export(tiny_hicom, tmp_path_factory.mktemp("lmms_cli") / "hicom-tiny")
    _letters_only(out)
    return out


def _prompt(question: str) -> str:
    return question + "\n" + "\n".join(OPTIONS) + POST_PROMPT


def _expected_letter(tokenizer, model, processor, video: Path, context: str) -> str:
    """The answer llava_vid's path must give: 4 uniformly sampled frames, ``<image>\\n`` + the rendered
    question in the qwen_1_5 template, the greedy next token (bf16 on the CPU)."""
    from decord import VideoReader, cpu
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    reader = VideoReader(str(video), ctx=cpu(0), num_threads=1)
    frames = reader.get_batch(np.linspace(0, len(reader) - 1, FRAMES, dtype=int).tolist()).asnumpy()
    clip = processor.preprocess(frames, return_tensors="pt")["pixel_values"].bfloat16()
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + context)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    with torch.inference_mode():
        logits = model(input_ids=ids, images=[clip], attention_mask=torch.ones_like(ids), modalities=["video"]).logits
    return tokenizer.decode([logits[0, -1].argmax().item()], skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def task_dir(exported, tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """The local task and our model's in-process answers to its first two questions. The first record's
    right answer is the model's, the second's is not: the task's accuracy must come out 0.5."""
    from llava.model.builder import load_pretrained_model

    folder = tmp_path_factory.mktemp("lmms_task")
    video = write_test_video(folder / "clip.mp4", num_frames=24)
    tokenizer, model, processor, _ = load_pretrained_model(str(exported), None, "llava_qwen", device_map="cpu",
                                                           torch_dtype="bfloat16", overwrite_config=dict(OVERWRITE))
    model.eval()
    expected = [_expected_letter(tokenizer, model, processor, Path(video), _prompt(q)) for q in QUESTIONS[:2]]
    assert set(expected) <= set(LETTERS), expected
    answers = [expected[0], next(x for x in LETTERS if x != expected[1]), "C"]
    records = [{"id": f"q{i}", "video": "clip.mp4", "question": q, "options": OPTIONS, "answer": a}
               for i, (q, a) in enumerate(zip(QUESTIONS, answers))]
    data = folder / "data.json"
    data.write_text(json.dumps(records))
    (folder / "utils.py").write_text(TASK_UTILS)
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=json.dumps(str(data)),
                                                           post_prompt=json.dumps(POST_PROMPT)))
    return folder, expected, answers


def test_lmms_eval_cli_on_an_exported_checkpoint(exported, task_dir, tmp_path):
    folder, expected, answers = task_dir
    out = tmp_path / "results"
    model_args = (f"pretrained={exported},conv_template=qwen_1_5,device=cpu,device_map=auto,torch_dtype=bfloat16,"
                  f"max_frames_num={FRAMES},force_sample=True")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "llava_vid", "--model_args", model_args, "--tasks", TASK,
           "--include_path", str(folder), "--limit", "2", "--batch_size", "1", "--log_samples",
           "--output_path", str(out)]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, log
    # lmms-eval 0.7.3 logs an error inside the evaluation (e.g. filelock 4: no filelock._api) and still exits 0
    results_files, samples_files = list(out.rglob("*_results.json")), list(out.rglob(f"*_samples_{TASK}.jsonl"))
    assert len(results_files) == 1 and len(samples_files) == 1, log
    [results_file], [samples_file] = results_files, samples_files
    results = json.loads(results_file.read_text())
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert results["n-samples"][TASK] == {"original": 3, "effective": 2}
    assert [s["doc_id"] for s in samples] == [0, 1]
    assert [s["input"] for s in samples] == [_prompt(q) for q in QUESTIONS[:2]]
    assert [s["target"] for s in samples] == answers[:2]
    # each reply is our model's answer on that video and prompt (a video that fails to load gives a sentence)
    assert [s["filtered_resps"] for s in samples] == expected
    assert [s["mcq_accuracy"] for s in samples] == [1.0, 0.0]
    assert results["results"][TASK]["mcq_accuracy,none"] == pytest.approx(0.5)
