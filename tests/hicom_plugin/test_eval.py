"""``--prompt-style hicom``: the core knows only its own style names until the plugin registers the alias."""

from types import SimpleNamespace

import pytest

from hicom_plugin.eval import PROMPT_STYLE_ALIAS, register_eval
from llava.eval import benchmarks
from llava.eval.benchmarks import BENCHMARKS, UnknownPromptStyleError, resolve_prompt_style
from llava.eval.questions import VideoQuestion
from llava.eval.video_infer import run_settings

QUESTION = VideoQuestion("q0", "What moves?", ("x.mp4",), ("a ball", "a cat"), "A")


@pytest.fixture
def core_aliases_only(monkeypatch):
    """The aliases as before any plugin registered one (entry points may have run in this process)."""
    monkeypatch.setattr(benchmarks, "_PROMPT_STYLE_ALIASES", {})


def test_hicom_resolves_to_the_release_prompts_only_after_the_plugin_registers_it(core_aliases_only):
    with pytest.raises(UnknownPromptStyleError) as info:
        resolve_prompt_style("hicom")
    assert "styles: release, lmms; aliases: none registered" in str(info.value)

    register_eval()
    register_eval()  # the entry point may run again: a no-op
    assert PROMPT_STYLE_ALIAS == "hicom" and resolve_prompt_style("hicom") == "release"
    for benchmark in BENCHMARKS.values():
        assert benchmark.prompt(QUESTION, "hicom", None) == benchmark.prompt(QUESTION, "release", None)
    with pytest.raises(UnknownPromptStyleError, match="styles: release, lmms; aliases: hicom -> release"):
        resolve_prompt_style("hicom2")


def test_answers_record_the_style_not_the_alias(core_aliases_only):
    """``--prompt-style hicom`` and the default answer alike, so their answers files resume each other."""
    register_eval()
    args = SimpleNamespace(benchmark="mvbench", model_path="ckpt", model_base=None, conv_mode="qwen_1_5",
                           num_frames=8, subtitle_folder=None, temperature=0.0, top_p=None, num_beams=1,
                           max_new_tokens=16, seed=0, torch_dtype=None)
    assert run_settings(SimpleNamespace(**vars(args), prompt_style="hicom")) == run_settings(
        SimpleNamespace(**vars(args), prompt_style="release"))
