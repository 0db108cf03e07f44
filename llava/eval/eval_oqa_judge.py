"""Open-ended video QA scored by an LLM judge behind any OpenAI-compatible chat endpoint.

    python -m llava.eval.eval_oqa_judge --benchmark activitynet --question-file test_q.json \\
        --gt-file test_a.json --answers-file out/merge.jsonl --report out/judge.json \\
        --judge-base-url http://localhost:8000/v1 --judge-model gpt-3.5-turbo-0125

The judge is configured by flags or the environment (flag first):

* endpoint: ``--judge-base-url`` / ``$JUDGE_BASE_URL`` / ``$OPENAI_BASE_URL`` / ``$OPENAI_API_URL``
  (a base like ``.../v1``, or the full ``.../chat/completions`` URL lmms-eval uses);
* model: ``--judge-model`` / ``$JUDGE_MODEL`` / ``$MODEL_VERSION``;
* key (optional for local servers): ``--judge-api-key`` / ``$JUDGE_API_KEY`` / ``$OPENAI_API_KEY``.

Without an endpoint and a model the command stops with an error; it never scores without a judge.

Dimensions: ActivityNet-QA gets ``qa`` (yes/no + a 0-5 score; accuracy = yes / (yes + no)); the
VideoChatGPT bench gets ``correctness``, ``detail`` and ``context`` (generic questions), ``temporal``
and ``consistency`` (the two phrasings of a question judged together), each a 0-5 score averaged. Scores
are truncated to integers before averaging, as the release did.

Verdicts are cached (``--judge-cache``, by default next to the answers file): a rerun only asks for
what is not cached yet. Transient HTTP errors are retried with exponential backoff; an endpoint that
stays unreachable, or refuses the request (bad key, unknown model), stops the run. A reply that is not a
valid verdict is retried and, if it stays invalid, counted as a judge failure (exit status 1) -- never
as a score of 0. Items whose video failed at inference count as "no" / 0 and are reported as such
(``--skip-failed`` leaves them out).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from .answers import load_checked
from .cli import (
    JudgeNotConfiguredError,
    UsageError,
    add_answers_args,
    add_question_args,
    command,
    merge_if_asked,
    questions_from_args,
)
from .questions import VideoQuestion

logger = logging.getLogger(__name__)

PROMPT_VERSION = "1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class JudgeUnavailableError(RuntimeError):
    """The judge endpoint refused the request or could not be reached after the retries."""


class InvalidVerdictError(ValueError):
    """The judge's reply is not a verdict of the expected form."""


# --------------------------------------------------------------------------- configuration and client


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    retries: int = 5
    backoff: float = 2.0
    timeout: float = 60.0


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def judge_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> JudgeConfig:
    base = _first(args.judge_base_url, environ.get("JUDGE_BASE_URL"), environ.get("OPENAI_BASE_URL"),
                  environ.get("OPENAI_API_URL"))
    model = _first(args.judge_model, environ.get("JUDGE_MODEL"), environ.get("MODEL_VERSION"))
    if not base or not model:
        raise JudgeNotConfiguredError(
            "no LLM judge configured: open-ended answers are only scored by a judge. Give the endpoint with "
            "--judge-base-url (or $JUDGE_BASE_URL / $OPENAI_BASE_URL / $OPENAI_API_URL) and the model with "
            f"--judge-model (or $JUDGE_MODEL / $MODEL_VERSION); missing: {'endpoint' if not base else 'model'}"
        )
    url = base.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    key = _first(args.judge_api_key, environ.get("JUDGE_API_KEY"), environ.get("OPENAI_API_KEY"))
    return JudgeConfig(url, model, key, args.judge_temperature, args.judge_max_tokens, args.judge_retries,
                       args.judge_backoff, args.judge_timeout)


class JudgeClient:
    """Chat completions over HTTP (urllib), with retries and backoff for transient failures."""

    def __init__(self, config: JudgeConfig):
        self.config = config

    def _post(self, messages: list[dict]) -> str:
        cfg = self.config
        body = json.dumps({"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                           "max_tokens": cfg.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        request = urllib.request.Request(cfg.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
            payload = json.loads(response.read())
        return payload["choices"][0]["message"]["content"]

    def verdict(self, messages: list[dict], parse: Callable[[str], dict]) -> tuple[dict, str]:
        """``(verdict, raw reply)``. Raises InvalidVerdictError or JudgeUnavailableError after the retries."""
        last: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff * 2 ** (attempt - 1))
            try:
                reply = self._post(messages)
            except urllib.error.HTTPError as err:
                if err.code not in _RETRY_STATUS:
                    raise JudgeUnavailableError(f"judge {self.config.url} refused the request: HTTP {err.code} "
                                                f"{err.reason} (check the model name and key)") from err
                last = err
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, KeyError,
                    IndexError, TypeError) as err:
                last = err
            else:
                try:
                    return parse(reply), reply
                except InvalidVerdictError as err:
                    last = err
            logger.debug("judge attempt %d failed: %s", attempt + 1, last)
        if isinstance(last, InvalidVerdictError):
            raise last
        raise JudgeUnavailableError(f"judge {self.config.url} did not answer after {self.config.retries + 1} tries "
                                    f"(last error: {last})")


# --------------------------------------------------------------------------- prompts and verdicts

_SYSTEM = ("You evaluate answers that a model gave to questions about videos. You compare the predicted answer "
           "with the reference answer written by a person. {focus}")
_SCORE_FORMAT = ("Reply with a Python dictionary string and nothing else, with the key 'score' holding an integer "
                 "from 0 (worst) to 5 (best). Example: {'score': 3}")
_FOCUS = {
    "qa": "Judge whether the two answers mean the same thing; synonyms and paraphrases count as matches.",
    "correctness": ("Judge factual correctness: the prediction should agree with the reference and contain no "
                    "statement that contradicts it or is not supported by it."),
    "detail": ("Judge detail orientation: the prediction should cover every point the reference makes and be "
               "specific rather than generic."),
    "context": ("Judge contextual understanding: the prediction should fit the situation the reference describes "
                "and address what the question actually asks."),
    "temporal": ("Judge temporal understanding: the prediction should give the events in the same order and with "
                 "the same timing as the reference."),
    "consistency": ("The same question was asked twice in different words. Judge consistency: both predictions "
                    "should agree with each other and with the reference; contradictory predictions score low."),
}

#: benchmark -> judged dimensions
DIMENSIONS = {
    "activitynet": ("qa",),
    "vcgpt_generic": ("correctness", "detail", "context"),
    "vcgpt_temporal": ("temporal",),
    "vcgpt_consistency": ("consistency",),
}


def judge_messages(dimension: str, questions: Sequence[str], reference: str, predictions: Sequence[str]) -> list[dict]:
    if dimension == "consistency":
        body = (f"Question, first wording: {questions[0]}\nQuestion, second wording: {questions[1]}\n"
                f"Reference answer: {reference}\nPrediction to the first wording: {predictions[0]}\n"
                f"Prediction to the second wording: {predictions[1]}\n\n")
    else:
        body = f"Question: {questions[0]}\nReference answer: {reference}\nPredicted answer: {predictions[0]}\n\n"
    if dimension == "qa":
        body += ("Reply with a Python dictionary string and nothing else, with the keys 'pred' ('yes' if the "
                 "prediction matches the reference, else 'no') and 'score' (an integer from 0 to 5, 5 for the best "
                 "match). Example: {'pred': 'yes', 'score': 4}")
    else:
        body += _SCORE_FORMAT
    return [{"role": "system", "content": _SYSTEM.format(focus=_FOCUS[dimension])}, {"role": "user", "content": body}]


_BRACES = re.compile(r"\{.*?\}", re.DOTALL)


def parse_verdict(reply: str, with_pred: bool) -> dict:
    """``{'score': float[, 'pred': 'yes'|'no']}`` from a reply holding a dict literal (Python or JSON)."""
    for snippet in _BRACES.findall(reply or ""):
        try:
            value = ast.literal_eval(snippet)
        except (ValueError, SyntaxError):
            try:
                value = json.loads(snippet)
            except json.JSONDecodeError:
                continue
        if not isinstance(value, dict):
            continue
        score = value.get("score")
        if isinstance(score, str):
            try:
                score = float(score)
            except ValueError:
                score = None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 5:
            continue
        verdict = {"score": float(score)}
        if with_pred:
            pred = str(value.get("pred", "")).strip().lower()
            if pred not in ("yes", "no"):
                continue
            verdict["pred"] = pred
        return verdict
    raise InvalidVerdictError(f"not a verdict: {reply[:200]!r}")


# --------------------------------------------------------------------------- items, cache, report


@dataclasses.dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: a question (or a consistency pair) with its reference and predictions."""

    item_id: str
    dimension: str
    questions: tuple[str, ...]
    reference: str
    predictions: tuple[str, ...] | None  # None: the inference failed for this item

    def key(self, model: str) -> str:
        raw = json.dumps([PROMPT_VERSION, model, self.dimension, self.questions, self.reference, self.predictions])
        return hashlib.sha256(raw.encode()).hexdigest()


def judge_items(benchmark: str, questions: Sequence[VideoQuestion], answers: Mapping[str, Mapping]) -> list[JudgeItem]:
    def prediction(q: VideoQuestion) -> str | None:
        record = answers[q.qid]
        return None if record["failed"] else (record["text"] or "")

    missing_gt = [q.qid for q in questions if q.answer is None]
    if missing_gt:
        raise UsageError(f"{benchmark}: {len(missing_gt)} questions have no reference answer (e.g. {missing_gt[:3]}); "
                         "give the ground-truth file with --gt-file")
    items = []
    if benchmark == "vcgpt_consistency":
        pairs: dict[str, list[VideoQuestion]] = defaultdict(list)
        for q in questions:
            pairs[q.info["pair"]].append(q)
        for pair, (first, second) in pairs.items():
            preds = (prediction(first), prediction(second))
            items.append(JudgeItem(pair, "consistency", (first.question, second.question), first.answer,
                                   None if None in preds else preds))
        return items
    for dimension in DIMENSIONS[benchmark]:
        for q in questions:
            pred = prediction(q)
            items.append(JudgeItem(q.qid, dimension, (q.question,), q.answer, None if pred is None else (pred,)))
    return items


class VerdictCache:
    """Append-only JSONL of verdicts keyed by item content and judge model."""

    def __init__(self, path: Path):
        self.path = path
        self.verdicts: dict[str, dict] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    entry = json.loads(line)
                    self.verdicts[entry["key"]] = entry["verdict"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s:%d: unreadable cache line ignored", path, number)

    def add(self, key: str, item: JudgeItem, verdict: dict, reply: str) -> None:
        self.verdicts[key] = verdict
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "id": item.item_id, "dimension": item.dimension,
                                     "verdict": verdict, "reply": reply}, ensure_ascii=False) + "\n")


def run_judge(items: Sequence[JudgeItem], client: JudgeClient, cache: VerdictCache, workers: int = 4) -> dict[str, dict]:
    """Verdicts by item key (cached ones reused); items whose replies stay invalid are left out."""
    model = client.config.model
    todo = [item for item in items if item.predictions is not None and item.key(model) not in cache.verdicts]
    logger.info("%d items to judge, %d cached", len(todo), sum(1 for i in items if i.key(model) in cache.verdicts))
    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(client.verdict, judge_messages(i.dimension, i.questions, i.reference, i.predictions),
                        lambda reply, qa=i.dimension == "qa": parse_verdict(reply, qa)): i
            for i in todo
        }
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="judging", unit="item"):
                item = futures[future]
                try:
                    verdict, reply = future.result()
                except InvalidVerdictError as err:
                    failures += 1
                    logger.warning("%s %s: %s", item.dimension, item.item_id, err)
                    continue
                cache.add(item.key(model), item, verdict, reply)
        except JudgeUnavailableError:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {item.key(model): cache.verdicts[item.key(model)] for item in items if item.key(model) in cache.verdicts}


def summarise(items: Sequence[JudgeItem], verdicts: Mapping[str, dict], model: str, skip_failed: bool) -> dict:
    """Per dimension: mean score (integers, as the release), and yes/no accuracy for ``qa``."""
    report: dict[str, dict] = {}
    for dimension in dict.fromkeys(item.dimension for item in items):
        mine = [item for item in items if item.dimension == dimension]
        judged = [verdicts[i.key(model)] for i in mine if i.predictions is not None and i.key(model) in verdicts]
        failed_items = sum(1 for i in mine if i.predictions is None)
        unjudged = [i.item_id for i in mine if i.predictions is not None and i.key(model) not in verdicts]
        zeros = [] if skip_failed else [{"score": 0.0, "pred": "no"}] * failed_items
        scored = judged + zeros
        row = {"items": len(mine), "judged": len(judged), "judge_failures": len(unjudged),
               "judge_failure_ids": unjudged[:5], "failed_items": failed_items,
               "mean_score": sum(int(v["score"]) for v in scored) / len(scored) if scored else None}
        if dimension == "qa":
            yes = sum(1 for v in scored if v["pred"] == "yes")
            row.update(yes=yes, no=len(scored) - yes, accuracy=100.0 * yes / len(scored) if scored else None)
        report[dimension] = row
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_oqa_judge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_args(parser, "oqa")
    add_answers_args(parser)
    parser.add_argument("--report", default=None, help="write the report as JSON here")
    parser.add_argument("--judge-cache", default=None, help="verdict cache (default: <answers-file>.judge.jsonl)")
    parser.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint of the judge model")
    parser.add_argument("--judge-model", default=None, help="the judge model's name at that endpoint")
    parser.add_argument("--judge-api-key", default=None, help="API key (default: the environment's OPENAI_API_KEY)")
    parser.add_argument("--judge-temperature", type=float, default=0.0, help="the release used 0.7")
    parser.add_argument("--judge-max-tokens", type=int, default=256, help="longest judge reply, in tokens")
    parser.add_argument("--judge-retries", type=int, default=5, help="attempts per item before it is recorded as failed")
    parser.add_argument("--judge-backoff", type=float, default=2.0, help="seconds before the first retry, doubling")
    parser.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--judge-workers", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--skip-failed", action="store_true", help="leave items whose video failed out of the means")
    return parser


def run(args: argparse.Namespace) -> int:
    config = judge_config(args)  # before any work: no judge, no scores
    questions, fingerprint = questions_from_args(args)
    merge_if_asked(args, questions, fingerprint)
    answers = load_checked(Path(args.answers_file), fingerprint, questions)
    unanswered = [q for q in questions if q.qid not in answers]
    if unanswered and not args.allow_partial:
        raise UsageError(f"{args.answers_file}: {len(unanswered)} of {len(questions)} questions are unanswered, "
                         f"e.g. {[q.qid for q in unanswered[:3]]}; finish inference (it resumes) or pass --allow-partial")
    answered = [q for q in questions if q.qid in answers]
    if args.benchmark == "vcgpt_consistency":  # a pair is judged only with both answers
        pairs = defaultdict(int)
        for q in answered:
            pairs[q.info["pair"]] += 1
        answered = [q for q in answered if pairs[q.info["pair"]] == 2]
    items = judge_items(args.benchmark, answered, answers)
    cache = VerdictCache(Path(args.judge_cache or f"{args.answers_file}.judge.jsonl"))
    try:
        verdicts = run_judge(items, JudgeClient(config), cache, args.judge_workers)
    except JudgeUnavailableError as err:
        print(f"error: {err} (verdicts so far are cached in {cache.path}; rerun to continue)", file=sys.stderr)
        return 2
    report = {"benchmark": args.benchmark, "answers_file": str(args.answers_file), "judge_model": config.model,
              "judge_url": config.url, "prompt_version": PROMPT_VERSION, "skip_failed": args.skip_failed,
              "dimensions": summarise(items, verdicts, config.model, args.skip_failed)}
    print(json.dumps(report["dimensions"], indent=1))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1))
    failures = sum(row["judge_failures"] for row in report["dimensions"].values())
    if failures:
        print(f"error: {failures} items got no valid verdict; rerun to retry them", file=sys.stderr)
        return 1
    return 0


main = command(run, build_parser())

if __name__ == "__main__":
    sys.exit(main())
