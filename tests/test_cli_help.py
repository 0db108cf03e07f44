"""Every command-line entry point documents every flag and names itself as it is run (``python -m ...``)."""

from __future__ import annotations

import argparse
import importlib

import pytest

COMMANDS = [
    "llava.eval.model_video_mcqa", "llava.eval.model_video_oqa", "llava.eval.eval_video_mcqa",
    "llava.eval.eval_oqa_judge", "llava.eval.merge", "llava.export", "llava.serve.cli", "llava.toy.tiny",
    "llava.toy.tiny_lit", "llava.toy.synthetic", "llava.toy.walkthrough", "llava.toy.zoo", "llava.toy.tiny_pretrain",
    "hicom_plugin.tools.release", "benchmarks.run", "llava.eval.compare",
]


class Captured(Exception):
    pass


@pytest.mark.parametrize("module", COMMANDS)
def test_every_flag_has_help_and_the_program_is_named_as_run(module, monkeypatch):
    parsers = []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise Captured

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Captured):
        importlib.import_module(module).main([])
    parser = parsers[0]
    assert parser.prog == f"python -m {module}"
    assert parser.description, f"{module}: no description"
    undocumented = [action.option_strings or action.dest for action in parser._actions
                    if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert not undocumented, f"{module}: flags without help: {undocumented}"
    text = parser.format_help()
    assert "issue" not in text.lower(), f"{module}: --help refers to an issue"
