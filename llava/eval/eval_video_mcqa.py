"""Scores a merged multiple-choice answers file against the benchmark's ground truth.

    python -m llava.eval.eval_video_mcqa --benchmark mlvu --question-file MLVU/json \\
        --answers-file out/merge.jsonl --parser-version legacy --report out/report.json

Per benchmark, as the official evaluations aggregate:

* Video-MME: accuracy over all questions (micro), with tables by duration and by task type;
* MVBench: accuracy per task, empty replies left out of a task's denominator; overall = the mean over
  tasks (what papers report), the micro accuracy next to it;
* MLVU: accuracy per question type; overall = M-Avg, the mean over the types present;
* EgoSchema: accuracy over the questions that have ground truth (the 500-question subset); the full set
  can only be scored by the benchmark's server (``--egoschema-submission`` writes its JSON).

Every question with ground truth counts, and counts as wrong when its reply has no letter (a parse
failure) or its video could not be decoded (a failed item); both are counted in the report, with
examples. ``--skip-failed`` leaves failed items out instead, as the release's ``--skip_missing`` did.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from .answers import load_checked
from .benchmarks import BENCHMARKS
from .cli import UsageError, add_answers_args, add_question_args, command, merge_if_asked, questions_from_args
from .questions import LETTERS, VideoQuestion
from .scoring import PARSER_VERSIONS, extract_letter

logger = logging.getLogger(__name__)

#: benchmarks whose headline number is the mean of per-task accuracies
TASK_MEAN = {"mvbench": "mean over tasks", "mlvu": "M-Avg (mean over question types)"}


def _outcome(question: VideoQuestion, record: Mapping | None, benchmark: str, version: str,
             rng: random.Random | None) -> tuple[str, str | None, bool]:
    """``(status, letter, random fallback used)``; status is correct / wrong / parse_failure / failed /
    empty / missing / no_ground_truth."""
    if record is None:
        return "missing", None, False
    if record["failed"]:
        return "failed", None, False
    text = (record["text"] or "").strip()
    if benchmark == "mvbench" and not text:
        return "empty", None, False
    letter = extract_letter(benchmark, version, text, question.options)
    fell_back = letter is None and rng is not None
    if fell_back:
        letter = rng.choice(question.letters)
    if question.answer is None:
        return "no_ground_truth", letter, fell_back
    if letter is None:
        return "parse_failure", None, False
    return ("correct" if letter == question.answer else "wrong"), letter, fell_back


def _accuracy(counts: Mapping[str, int], skip_failed: bool) -> tuple[int, float | None]:
    scored = counts["correct"] + counts["wrong"] + counts["parse_failure"] + counts["missing"]
    if not skip_failed:
        scored += counts["failed"]
    return scored, (100.0 * counts["correct"] / scored if scored else None)


def _group_row(name: str, counts: Mapping[str, int], skip_failed: bool) -> dict:
    scored, accuracy = _accuracy(counts, skip_failed)
    return {"name": name, "scored": scored, "correct": counts["correct"], "accuracy": accuracy,
            "parse_failures": counts["parse_failure"], "failed": counts["failed"], "empty": counts["empty"]}


def score_mcqa(benchmark: str, questions: Sequence[VideoQuestion], answers: Mapping[str, Mapping],
               parser_version: str, skip_failed: bool = False, random_fallback_seed: int | None = None) -> dict:
    """The report of one answers file (see the module docstring for the rules)."""
    spec = BENCHMARKS[benchmark]
    statuses: dict[str, tuple[str, str | None, bool]] = {}
    for q in questions:
        rng = None
        if benchmark == "egoschema" and random_fallback_seed is not None:
            rng = random.Random(f"{random_fallback_seed}:{q.qid}")  # per question: independent of order
        statuses[q.qid] = _outcome(q, answers.get(q.qid), benchmark, parser_version, rng)

    def tally(selected) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for q in selected:
            counts[statuses[q.qid][0]] += 1
        return counts

    overall = tally(questions)
    scored, accuracy = _accuracy(overall, skip_failed)
    tables = {}
    for key in spec.tables:
        groups: dict[str, list[VideoQuestion]] = defaultdict(list)
        for q in questions:
            groups[q.task if key == "task" else str(q.info.get(key, ""))].append(q)
        tables[key] = [_group_row(name, tally(members), skip_failed) for name, members in groups.items()]
    report = {
        "benchmark": benchmark, "parser_version": parser_version, "questions": len(questions), "scored": scored,
        "correct": overall["correct"], "accuracy": accuracy, "parse_failures": overall["parse_failure"],
        "failed_items": overall["failed"], "empty_replies": overall["empty"], "missing": overall["missing"],
        "no_ground_truth": overall["no_ground_truth"], "skip_failed": skip_failed, "tables": tables,
        "parse_failure_examples": [
            {"question_id": q.qid, "text": answers[q.qid]["text"]}
            for q in questions if statuses[q.qid][0] == "parse_failure"
        ][:5],
    }
    if random_fallback_seed is not None:
        report["random_fallbacks"] = sum(fell_back for _, _, fell_back in statuses.values())
    headline, value = "accuracy", accuracy
    if benchmark in TASK_MEAN:
        per_task = [row["accuracy"] for row in tables["task"] if row["accuracy"] is not None]
        headline, value = TASK_MEAN[benchmark], (sum(per_task) / len(per_task) if per_task else None)
        report["mean_of_tasks"] = value
    report["headline"] = {"metric": headline, "value": value}
    report["letters"] = {qid: letter for qid, (_, letter, _) in statuses.items()}
    return report


def format_report(report: Mapping) -> str:
    """Markdown tables for the console."""
    def pct(value):
        return "n/a" if value is None else f"{value:.1f}"

    lines = [f"## {report['benchmark']} (parser {report['parser_version']})", ""]
    for key, rows in report["tables"].items():
        lines += [f"| {key} | scored | correct | accuracy % | parse failures | failed |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['scored']} | {r['correct']} | {pct(r['accuracy'])} | {r['parse_failures']} | "
                  f"{r['failed']} |" for r in rows]
        lines.append("")
    lines.append(f"overall: {report['correct']}/{report['scored']} = {pct(report['accuracy'])}%")
    if "mean_of_tasks" in report:
        lines.append(f"{report['headline']['metric']}: {pct(report['mean_of_tasks'])}%")
    lines.append(f"parse failures: {report['parse_failures']}, failed items: {report['failed_items']}, "
                 f"empty replies: {report['empty_replies']}, unanswered: {report['missing']}, "
                 f"without ground truth: {report['no_ground_truth']}")
    if "random_fallbacks" in report:
        lines.append(f"random letters (lmms-eval's EgoSchema fallback): {report['random_fallbacks']}")
    return "\n".join(lines)


def egoschema_submission(questions: Sequence[VideoQuestion], letters: Mapping[str, str | None]) -> dict[str, int]:
    """``{q_uid: option index}`` for the EgoSchema server; -1 where no letter was read."""
    return {q.qid: LETTERS.index(letters[q.qid]) if letters[q.qid] else -1 for q in questions}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_video_mcqa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_args(parser, "mcqa")
    add_answers_args(parser)
    parser.add_argument("--parser-version", default="legacy", choices=PARSER_VERSIONS,
                        help="how a reply is read as a letter: the release's parsers (legacy) or the current ones")
    parser.add_argument("--skip-failed", action="store_true", help="leave failed items out of the denominators")
    parser.add_argument("--egoschema-random-fallback", type=int, default=None, metavar="SEED",
                        help="reproduce lmms-eval: a seeded random letter where none is read (counted)")
    parser.add_argument("--egoschema-submission", default=None, help="write {q_uid: index} for the EgoSchema server")
    parser.add_argument("--report", default=None, help="write the report as JSON here")
    return parser


def run(args: argparse.Namespace) -> int:
    questions, fingerprint = questions_from_args(args)
    merge_if_asked(args, questions, fingerprint)
    answers = load_checked(Path(args.answers_file), fingerprint, questions)
    unanswered = [q.qid for q in questions if q.qid not in answers]
    if unanswered and not args.allow_partial:
        raise UsageError(f"{args.answers_file}: {len(unanswered)} of {len(questions)} questions are unanswered, "
                         f"e.g. {unanswered[:3]}; finish inference (it resumes) or pass --allow-partial")
    if args.egoschema_random_fallback is not None and args.benchmark != "egoschema":
        raise UsageError("--egoschema-random-fallback only applies to egoschema")
    report = score_mcqa(args.benchmark, questions, answers, args.parser_version, args.skip_failed,
                        args.egoschema_random_fallback)
    report.update(answers_file=str(args.answers_file), question_file=str(args.question_file))
    print(format_report(report))
    if args.egoschema_submission:
        Path(args.egoschema_submission).write_text(json.dumps(egoschema_submission(questions, report["letters"]), indent=1))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1))
    return 0


main = command(run, build_parser())

if __name__ == "__main__":
    sys.exit(main())
