"""The equal-budget comparison harness on tiny checkpoints: one command gives results.jsonl, the table and
both plots; a 2-shard run gives the same numbers; token counts agree with the per-question answer lines
and with the model; budgets reach reducers as their options; bad configs name their row."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from llava.eval import compare
from llava.eval.eval_video_mcqa import score_mcqa
from llava.eval.flops import decoder_prefill_flops, flop_counter
from llava.eval.plots import pareto_front
from llava.model.token_reduction import TokenReducer, register_token_reducer, unregister_token_reducer
from llava.model.token_reduction.registry import TOKEN_REDUCERS
from llava.registry import load_plugins
from tests.helpers import eval_fixtures as fx
from tests.helpers.reducers import FirstTokens

FRAMES = 4  # tiny SigLIP: 7x7 patches; OneVision bilinear pooling -> 4x4 = 16 tokens per frame


class KeepBudget(TokenReducer):
    """Stage ``tokens``: the first ``budget`` grid tokens, never fewer than one per frame (a floor)."""

    stage = "tokens"

    def __init__(self, budget: int = 8, frames: int = FRAMES):
        super().__init__()
        self.budget, self.frames = budget, frames

    def reduce_tokens(self, tokens, batch):
        return [t[: max(self.budget, self.frames)] for t in tokens]

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return min(num_tokens_in, max(self.budget, t))


class KeepRatio(TokenReducer):
    """The first ``ratio`` of the grid tokens (the newline, last, is dropped)."""

    stage = "tokens"

    def __init__(self, ratio: float = 0.5):
        super().__init__()
        self.ratio = ratio

    def reduce_tokens(self, tokens, batch):
        return [t[: round(self.ratio * (t.shape[0] - 1))] for t in tokens]

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return round(self.ratio * (num_tokens_in - 1))


class LastQueryTop(TokenReducer):
    """Stage ``llm``: from layer 1 keeps the ``budget`` visual tokens the last query attends to most."""

    stage = "llm"
    llm_layer = 1
    llm_attention_layer = 0

    def __init__(self, budget: int = 8):
        super().__init__()
        self.budget = budget

    def select_in_llm(self, ctx):
        scores = ctx.attention.mean(dim=1)[:, -1]  # (B, L)
        kept = []
        for row, spans in enumerate(ctx.visual_spans):
            visual = torch.cat([torch.arange(s, e) for s, e in spans])
            top = scores[row, visual].topk(min(self.budget, visual.numel())).indices
            kept.append(visual[top].sort().values)
        return kept


class NeedsTowerAttention(TokenReducer):
    """Stage ``features``: stands for a method that reads the tower's attention maps, on a tower without them."""

    stage = "features"

    def reduce_features(self, batch):
        raise ValueError("needs the vision tower's attention maps, and this tower does not record them")

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return num_tokens_in


THROWAWAY = {"test_first_tokens": FirstTokens, "test_keep_budget": KeepBudget, "test_keep_ratio": KeepRatio,
             "test_last_query_top": LastQueryTop, "test_needs_attention": NeedsTowerAttention}


@pytest.fixture(scope="module", autouse=True)
def reducers():
    load_plugins()
    for name, cls in THROWAWAY.items():
        register_token_reducer(name)(cls)
    yield
    for name in THROWAWAY:
        unregister_token_reducer(name)


@pytest.fixture(scope="module")
def ov_checkpoint(tiny_dir, tiny_parts, tmp_path_factory) -> Path:
    """A tiny OneVision-style checkpoint with an image newline (so layouts add newline tokens)."""
    if "llava_qwen" not in tiny_parts:
        pytest.skip("assemble_llava_qwen not implemented yet")
    from llava.model.builder import assemble_llava_qwen

    from safetensors.torch import load_file, save_file

    out = assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny",
                              tmp_path_factory.mktemp("compare") / "tiny-ov", mm_newline_position="one_token",
                              mm_spatial_pool_mode="bilinear")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "mm_patch_merge_type": "spatial_unpad"}))
    weights = next(out.glob("*.safetensors"))
    state = load_file(weights)
    state["model.image_newline"] = torch.randn(config["hidden_size"], generator=torch.Generator().manual_seed(0))
    save_file(state, weights, metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> fx.Fixture:
    return fx.write_videomme(tmp_path_factory.mktemp("bench") / "videomme")


def write_config(path: Path, bench: fx.Fixture, rows: list[dict], **top) -> Path:
    config = {"benchmark": bench.benchmark, "question_file": str(bench.question_file),
              "video_folder": str(bench.video_folder), "output": "out", "num_frames": FRAMES, "layout": "onevision",
              "inference": {"max_new_tokens": 3, "device": "cpu"}, "rows": rows, **top}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def rows_for(ov: Path, trained: Path) -> list[dict]:
    return [
        {"name": "vanilla", "checkpoint": str(ov), "method": "none"},
        {"name": "vanilla-llava-video", "checkpoint": str(ov), "method": "none", "layout": "llava_video"},
        {"name": "first5", "checkpoint": str(ov), "method": "test_first_tokens", "options": {"keep": 5}},
        {"name": "keep20", "checkpoint": str(ov), "method": "test_keep_budget", "budget": 20},
        {"name": "keep-quarter", "checkpoint": str(ov), "method": "test_keep_ratio", "ratio": 0.25},
        {"name": "floor", "checkpoint": str(ov), "method": "test_keep_budget", "budget": 2, "at_floor": True},
        {"name": "in-llm", "checkpoint": str(ov), "method": "test_last_query_top", "budget": 40},
        {"name": "trained", "checkpoint": str(trained), "method": "trained"},
        # every reducer registered (the plugins' too), the tiny LLM's 2 layers allowing pruning from layer 1 only
        {"name": "every", "checkpoint": str(ov), "method": "all", "budget": 20, "at_floor": True,
         "options": {name: {"layer": 1} for name in TOKEN_REDUCERS.names()
                     if "layer" in TOKEN_REDUCERS.get(name).option_names()}},
    ]


@pytest.fixture(scope="module")
def one_run(tmp_path_factory, bench, ov_checkpoint, tiny_hicom):
    """The whole comparison, one command, one process."""
    root = tmp_path_factory.mktemp("one")
    config = write_config(root / "runs.yaml", bench, rows_for(ov_checkpoint, tiny_hicom))
    assert compare.main(["--config", str(config)]) == 0
    return root / "out"


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, bench, ov_checkpoint, tiny_hicom):
    """The same comparison in two shards, then the report step."""
    root = tmp_path_factory.mktemp("sharded")
    config = write_config(root / "runs.yaml", bench, rows_for(ov_checkpoint, tiny_hicom))
    for chunk in ("0", "1"):
        assert compare.main(["--config", str(config), "--num-chunks", "2", "--chunk-idx", chunk]) == 0
    assert not (root / "out" / "results.jsonl").exists()  # a shard reports nothing
    assert compare.main(["--config", str(config), "--num-chunks", "2", "--report-only"]) == 0
    return root / "out"


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def answer_lines(out: Path, key: str) -> list[dict]:
    return [json.loads(line) for line in (out / "rows" / key / "merged.jsonl").read_text().splitlines()]


def test_one_command_writes_results_table_and_both_plots(one_run):
    rows = results(one_run)
    assert [r["name"] for r in rows][:8] == ["vanilla", "vanilla-llava-video", "first5", "keep20", "keep-quarter",
                                             "floor", "in-llm", "trained"]
    every = [r["method"] for r in rows if r["row"] == 8]
    assert every == [n for n in TOKEN_REDUCERS.names() if {"budget", "ratio"} & set(TOKEN_REDUCERS.get(n).option_names())]
    table = (one_run / "table.md").read_text().splitlines()
    assert sum(line.startswith(f"| {r['row']}: {r['name']} |") for r in rows for line in table) == len(rows)
    for name in ("accuracy_vs_visual_tokens.png", "accuracy_vs_prefill_flops.png"):
        with Image.open(one_run / name) as image:
            assert image.format == "PNG" and image.size == (960, 640)
            assert len(image.getcolors(1 << 16)) > 10  # axes, points and labels were drawn
    for r in rows:
        assert r["questions"] == 4 and r["failed"] == 0
        assert r["settings"]["num_frames"] == FRAMES and r["model"]["weights"] == r["settings"]["model_weights"]
        assert r["git_commit"] and r["versions"]["torch"] == torch.__version__
        assert r["device"] and r["flops"]["tower"]["min"] > 0 and r["flops"]["projector"]["min"] > 0
        if r["stage"] in ("none", "projector", "llm"):  # nothing runs outside the tower and projector
            assert r["flops"]["reducer"]["max"] == 0, r["name"]
        assert set(r["task_accuracy"]) == {"Counting Problem", "Object Recognition"}


def test_token_counts_recomputed_from_the_answer_lines_and_the_model(one_run):
    """Every count in results.jsonl is re-derived here from the per-question lines, and checked against
    what the layout and the reducers must give."""
    by_name = {r["name"]: r for r in results(one_run)}
    for r in by_name.values():
        lines = answer_lines(one_run, f"{r['row']:02d}-{r['name']}")
        visual = [m["input_length"] - m["text_tokens"] - m["newline_tokens"] for m in (x["measure"] for x in lines)]
        assert r["visual_tokens"] == {"mean": statistics.fmean(visual), "min": min(visual), "max": max(visual)}
        layer_avg = [statistics.fmean(x["measure"]["layer_lengths"]) - x["measure"]["text_tokens"]
                     - x["measure"]["newline_tokens"] for x in lines]
        assert r["layer_average_visual_tokens"]["mean"] == pytest.approx(statistics.fmean(layer_avg))
        assert r["flops"]["llm_prefill"]["max"] == max(x["measure"]["flops"]["llm_prefill"] for x in lines)
    grid = FRAMES * 16
    assert by_name["vanilla"]["visual_tokens"]["max"] == grid and by_name["vanilla"]["newline_tokens"]["max"] == 1
    # llava_video: 2x2 average pooling of 7x7 -> 3x3, a newline after each of the 3 rows of every frame
    video = by_name["vanilla-llava-video"]
    assert video["visual_tokens"]["max"] == FRAMES * 9 and video["newline_tokens"]["max"] == FRAMES * 3
    assert video["settings"]["visual_layout"] == "llava_video" and video["unreduced_visual_tokens"] == FRAMES * 9
    assert by_name["first5"]["visual_tokens"]["max"] == 5 and by_name["first5"]["options"] == {"keep": 5}
    assert by_name["keep20"]["visual_tokens"] == {"mean": 20, "min": 20, "max": 20}
    assert by_name["keep20"]["options"]["budget"] == 20 and not by_name["keep20"]["at_floor"]
    assert by_name["keep-quarter"]["options"]["ratio"] == 0.25 and by_name["keep-quarter"]["visual_tokens"]["max"] == 16
    floor = by_name["floor"]
    assert floor["at_floor"] and floor["visual_tokens"]["max"] == FRAMES and floor["target_tokens"] == 2
    # in-LLM: 2 decoder layers, all 65 LLM-input tokens (newline too) in layer 0 and R kept from layer 1 on;
    # layer average (grid + R) / 2 = 40 -> R = 2 * 40 - 64 = 16
    in_llm = by_name["in-llm"]
    assert in_llm["matched_on"] == "layer_average_tokens" and in_llm["options"]["budget"] == 16
    assert in_llm["visual_tokens"]["max"] == grid
    assert in_llm["layer_average_visual_tokens"]["max"] == pytest.approx((grid + 1 + 16) / 2 - 1)
    trained = by_name["trained"]
    assert trained["stage"] == "projector" and trained["model"]["projector"] == "hicom"
    assert trained["visual_tokens"]["max"] == trained["unreduced_visual_tokens"] < grid
    for r in (r for r in by_name.values() if r["row"] == 8):  # every registered reducer at 20 tokens
        reached = compare.matched_tokens(r)
        assert r["at_floor"] or reached <= 20 + (0.5 if r["stage"] == "llm" else 0), r["name"]


def test_accuracy_and_pareto_from_the_answers(one_run, bench):
    from llava.eval.benchmarks import load_questions

    questions = load_questions(bench.benchmark, str(bench.question_file))
    rows = results(one_run)
    for r in rows:
        answers = {x["question_id"]: x for x in answer_lines(one_run, f"{r['row']:02d}-{r['name']}")}
        assert r["accuracy"] == score_mcqa(bench.benchmark, questions, answers, "legacy")["accuracy"]
    points = [(compare.matched_tokens(r), r["headline"]["value"]) for r in rows]
    front = [not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points) for x, y in points]
    assert [r["pareto_tokens"] for r in rows] == front


def strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in (*compare.TIMING_KEYS, "num_chunks")} for r in rows]


def table_without_timing(out: Path) -> list[str]:
    return ["|".join(line.split("|")[:-3]) for line in (out / "table.md").read_text().splitlines()
            if line.startswith("|")]


def test_a_two_shard_run_gives_the_same_table(one_run, sharded_run):
    assert strip_timing(results(sharded_run)) == strip_timing(results(one_run))
    assert table_without_timing(sharded_run) == table_without_timing(one_run)
    assert len(list((sharded_run / "rows").glob("*/2_*.jsonl"))) == 2 * len(results(one_run))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_prefill_flops_formula_equals_the_flop_counter(tiny_dir, attention):
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2-tiny", attn_implementation=attention)
    ids = torch.arange(3, 40)[None]
    with flop_counter() as counter:
        llm(input_ids=ids, logits_to_keep=1)
    expected = decoder_prefill_flops(llm.config, [ids.shape[1]] * llm.config.num_hidden_layers)
    assert counter.get_total_flops() == expected
    with FlopCounterMode(display=False) as stock:  # torch's own counter misses the CPU SDPA kernel
        llm(input_ids=ids, logits_to_keep=1)
    assert (stock.get_total_flops() == expected) == (attention == "eager")


def test_presets_expand_rows(tmp_path, bench):
    rows = [{"name": "base", "checkpoint": "ckpt", "method": "none"},
            {"name": "first", "checkpoint": "ckpt", "method": "test_keep_budget"}]
    config = compare.load_config(write_config(tmp_path / "runs.yaml", bench, rows), preset="budgets")
    got = [(r.index, r.name, r.num_frames, r.budget, r.at_floor) for r in config.rows]
    assert got == [(0, "base/32f", 32, None, False), (0, "base/64f", 64, None, False), (0, "base/128f", 128, None, False),
                   (1, "first@680t/32f", 32, 680, True), (1, "first@1328t/64f", 64, 1328, True),
                   (1, "first@2624t/128f", 128, 2624, True)]
    config = compare.load_config(write_config(tmp_path / "runs.yaml", bench, rows, preset="ratios"))
    assert [(r.name, r.ratio, r.num_frames) for r in config.rows] == [
        ("base", None, FRAMES), ("first@10%", 0.10, FRAMES), ("first@15%", 0.15, FRAMES), ("first@25%", 0.25, FRAMES)]


def test_method_all_is_one_row_per_reducer_that_takes_a_budget(tmp_path, bench):
    rows = [{"name": "every", "checkpoint": "ckpt", "method": "all", "budget": 20}]
    config = compare.load_config(write_config(tmp_path / "runs.yaml", bench, rows))
    methods = [r.method for r in config.rows]
    assert {"test_keep_budget", "test_keep_ratio", "test_last_query_top"} <= set(methods)
    assert not {"test_first_tokens", "test_needs_attention"} & set(methods)  # neither takes a budget
    assert all(r.name == f"every-{r.method}" and r.budget == 20 and r.index == 0 for r in config.rows)


def test_the_example_configs_load_and_the_driver_parses():
    import subprocess

    folder = Path(__file__).resolve().parents[3] / "scripts" / "eval" / "compare"
    real = compare.load_config(folder / "runs.yaml", preset="budgets")
    assert real.benchmark == "videomme" and real.output.is_absolute()
    trained = [r for r in real.rows if r.method == "trained"]
    assert [r.num_frames for r in trained] == [32, 64, 128]
    assert {(r.num_frames, r.budget) for r in real.rows if r.reducer} == {(32, 680), (64, 1328), (128, 2624)}
    assert subprocess.run(["bash", "-n", str(folder / "compare.sh")]).returncode == 0


def test_the_command_documents_every_flag(monkeypatch):
    from tests.test_cli_help import test_every_flag_has_help_and_the_program_is_named_as_run as check

    check("llava.eval.compare", monkeypatch)


def test_pareto_front():
    assert pareto_front([(10, 50), (20, 60), (15, 40), (20, 55), (5, 50)]) == [False, True, False, False, True]


@pytest.mark.parametrize("row, message", [
    ({"method": "no_such_reducer"}, "unknown method 'no_such_reducer'"),
    ({"method": "test_keep_budget", "budget": 2}, "budget 2 is below what 'test_keep_budget' can produce"),
    ({"method": "test_last_query_top", "budget": 10}, "below 'test_last_query_top''s floor 32"),
    ({"method": "test_needs_attention"}, "needs the vision tower's attention maps"),
    ({"method": "test_first_tokens", "budget": 10}, "takes neither a 'budget' nor a 'ratio' option"),
    ({"method": "test_keep_budget", "options": {"keep": 3}}, "unknown option(s) keep"),
    ({"method": "trained", "budget": 10}, "runs the checkpoint at its own token count"),
])
def test_bad_rows_are_named(tmp_path, bench, ov_checkpoint, capsys, row, message):
    rows = [{"name": "fine", "checkpoint": str(ov_checkpoint), "method": "test_keep_budget", "budget": 30},
            {"name": "bad", "checkpoint": str(ov_checkpoint), **row}]
    config = write_config(tmp_path / "runs.yaml", bench, rows)
    assert compare.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "row 1 (bad)" in err and message in err, err
