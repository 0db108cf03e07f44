"""Merges the per-chunk answers files of one benchmark into one file, in question order.

    python -m llava.eval.merge --benchmark mvbench --question-file MVBench/json \\
        --output out/merge.jsonl out/4_0.jsonl out/4_1.jsonl out/4_2.jsonl out/4_3.jsonl

Refuses chunk files of another question set or other run settings, and questions answered twice;
questions answered nowhere are an error unless ``--allow-partial`` (rerun the chunk: it resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .answers import merge_answer_files
from .cli import add_question_args, command, questions_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.merge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_args(parser)
    parser.add_argument("--output", required=True, help="the merged answers file to write")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the merge even when some questions have no answer yet")
    parser.add_argument("inputs", nargs="+", help="chunk answers files, in chunk order")
    return parser


def run(args: argparse.Namespace) -> int:
    questions, fingerprint = questions_from_args(args)
    counts = merge_answer_files([Path(p) for p in args.inputs], Path(args.output), fingerprint, questions,
                                allow_partial=args.allow_partial)
    print(json.dumps({"output": args.output, **counts}))
    return 0


main = command(run, build_parser())

if __name__ == "__main__":
    sys.exit(main())
