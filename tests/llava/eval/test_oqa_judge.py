"""Open-ended evaluation end to end: tiny-model inference on ActivityNet-QA and VideoChatGPT-bench
fixtures, then the LLM judge against a local fake OpenAI-compatible server (stdlib ``http.server``):
verdicts, retries, caching, and clear failures when the judge is missing, refuses or talks nonsense."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llava.eval import eval_oqa_judge, merge, model_video_oqa
from llava.eval.eval_oqa_judge import InvalidVerdictError, parse_verdict
from tests.helpers import eval_fixtures as fx
from tests.helpers.eval_fixtures import run_in_process

JUDGE_ENV = ("JUDGE_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_URL", "JUDGE_MODEL", "MODEL_VERSION", "JUDGE_API_KEY",
             "OPENAI_API_KEY")


class FakeJudge(BaseHTTPRequestHandler):
    """Answers chat completions like a judge: 'yes' when the reference occurs in the prediction."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status = server.statuses.pop(0) if server.statuses else 200
        if status != 200:
            self.send_error(status)
            return
        user = body["messages"][-1]["content"]
        reference = re.search(r"Reference answer: (.*)", user).group(1)
        predictions = re.findall(r"Predict(?:ed answer|ion to the \w+ wording): (.*)", user)
        if any(marker in user for marker in server.garbage_for):
            content = "I would rather not say."
        elif "'pred'" in user:
            match = reference.lower() in predictions[0].lower()
            content = f"{{'pred': '{'yes' if match else 'no'}', 'score': {4.8 if match else 1}}}"
        else:
            content = f"Sure: {{'score': {len(predictions) + 1}}}"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.requests, server.statuses, server.garbage_for, server.lock = [], [], [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_judge_env(monkeypatch):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def merged(tiny_hicom, tiny_hicom_loaded, tmp_path_factory):
    """Inference + merge for every open-ended fixture set: name -> (fixture, merged answers file)."""
    root = tmp_path_factory.mktemp("oqa")
    sets = {"activitynet": fx.write_activitynet(root / "anet"), **fx.write_vcgpt(root / "vcgpt")}
    out = {}
    for name, fixture in sets.items():
        chunk, merged_file = root / f"{name}_1_0.jsonl", root / f"{name}_merge.jsonl"
        argv = ["--model-path", str(tiny_hicom), *fixture.args(), "--video-folder", str(fixture.video_folder),
                "--answers-file", str(chunk), "--num-frames", "4", "--max-new-tokens", "4"]
        if name == "activitynet":  # the command line once; the others reuse the loaded model
            assert model_video_oqa.main([*argv, "--device", "cpu"]) == 0
        else:
            run_in_process(tiny_hicom_loaded, "oqa", argv)
        assert merge.main([*fixture.args(), "--output", str(merged_file), str(chunk)]) == 0
        out[name] = (fixture, merged_file)
    return out


def with_texts(path, tmp_path, texts, failed=()):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line["text"] = None if line["question_id"] in failed else texts.get(line["question_id"], line["text"])
        line["failed"] = "video broken" if line["question_id"] in failed else None
    out = tmp_path / path.name
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def run_judge(fixture, answers, tmp_path, *extra):
    report = tmp_path / "report.json"
    rc = eval_oqa_judge.main([*fixture.args(), "--answers-file", str(answers), "--report", str(report),
                              "--judge-backoff", "0", "--judge-workers", "2", *extra])
    return rc, (json.loads(report.read_text()) if report.exists() and rc != 2 else None)


ANET_PREDICTIONS = {"v_abc123_0": "He is cooking.", "v_abc123_1": "no", "v_def456_0": "cooking pasta",
                    "v_def456_1": "yes it is"}


def test_activitynet_judged_with_retries_and_cache(merged, judge, tmp_path):
    fixture, answers = merged["activitynet"]
    answers = with_texts(answers, tmp_path, ANET_PREDICTIONS)
    judge.statuses = [503, 429]  # transient failures are retried
    rc, report = run_judge(fixture, answers, tmp_path, "--judge-base-url", judge.url, "--judge-model", "fake-judge",
                           "--judge-api-key", "sk-test")
    assert rc == 0
    qa = report["dimensions"]["qa"]
    assert (qa["judged"], qa["yes"], qa["no"], qa["accuracy"]) == (4, 3, 1, 75.0)
    assert qa["mean_score"] == (4 + 1 + 4 + 4) / 4  # 4.8 truncated to 4, as the release did
    assert len(judge.requests) == 4 + 2
    first = judge.requests[-1]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "fake-judge" and first["body"]["temperature"] == 0.0
    # rerun: every verdict comes from the cache
    rc, again = run_judge(fixture, answers, tmp_path, "--judge-base-url", judge.url, "--judge-model", "fake-judge")
    assert rc == 0 and again["dimensions"] == report["dimensions"] and len(judge.requests) == 6
    # another judge model is not served from that cache
    rc, _ = run_judge(fixture, answers, tmp_path, "--judge-base-url", judge.url, "--judge-model", "other-judge")
    assert rc == 0 and len(judge.requests) == 10


def test_vcgpt_five_dimensions(merged, judge, tmp_path, monkeypatch):
    # configured through the environment; lmms-eval's full-URL form
    monkeypatch.setenv("OPENAI_API_URL", judge.url + "/chat/completions")
    monkeypatch.setenv("MODEL_VERSION", "fake-judge")
    scores = {}
    for name in ("vcgpt_generic", "vcgpt_temporal", "vcgpt_consistency"):
        fixture, answers = merged[name]
        rc, report = run_judge(fixture, answers, tmp_path / name)
        assert rc == 0, name
        scores.update({dim: (row["judged"], row["mean_score"]) for dim, row in report["dimensions"].items()})
    assert scores == {"correctness": (2, 2.0), "detail": (2, 2.0), "context": (2, 2.0), "temporal": (1, 2.0),
                      "consistency": (2, 3.0)}
    assert len(judge.requests) == 3 * 2 + 1 + 2
    pair = [r for r in judge.requests if "second wording" in r["body"]["messages"][-1]["content"]][0]
    text = pair["body"]["messages"][-1]["content"]
    assert "What is the man holding?" in text and "What object is in the man's hand?" in text


def test_no_judge_configured_is_an_error_not_a_zero(merged, tmp_path, capsys):
    fixture, answers = merged["activitynet"]
    rc, report = run_judge(fixture, answers, tmp_path)
    assert rc == 2 and report is None and not (tmp_path / "report.json").exists()
    err = capsys.readouterr().err
    assert "no LLM judge configured" in err and "--judge-base-url" in err and "$JUDGE_MODEL" in err


def test_invalid_verdicts_are_counted_failures_and_retried_later(merged, judge, tmp_path, capsys):
    fixture, answers = merged["activitynet"]
    answers = with_texts(answers, tmp_path, ANET_PREDICTIONS)
    judge.garbage_for = ["Predicted answer: no"]
    flags = ["--judge-base-url", judge.url, "--judge-model", "fake-judge", "--judge-retries", "2"]
    rc, report = run_judge(fixture, answers, tmp_path, *flags)
    assert rc == 1
    qa = report["dimensions"]["qa"]
    assert (qa["judged"], qa["judge_failures"], qa["judge_failure_ids"]) == (3, 1, ["v_abc123_1"])
    assert qa["yes"] == 3 and qa["no"] == 0  # the unjudged item is not scored as "no"
    assert "1 items got no valid verdict" in capsys.readouterr().err
    assert len(judge.requests) == 3 + 3  # three tries for the bad one
    judge.garbage_for = []
    rc, report = run_judge(fixture, answers, tmp_path, *flags)
    assert rc == 0 and report["dimensions"]["qa"]["no"] == 1 and len(judge.requests) == 7


def test_failed_inference_items(merged, judge, tmp_path):
    fixture, answers = merged["activitynet"]
    answers = with_texts(answers, tmp_path, ANET_PREDICTIONS, failed={"v_abc123_0"})
    flags = ["--judge-base-url", judge.url, "--judge-model", "fake-judge"]
    rc, report = run_judge(fixture, answers, tmp_path, *flags)
    qa = report["dimensions"]["qa"]
    assert rc == 0 and (qa["failed_items"], qa["judged"], qa["yes"], qa["no"]) == (1, 3, 2, 2)
    assert len(judge.requests) == 3
    rc, report = run_judge(fixture, answers, tmp_path, *flags, "--skip-failed")
    assert report["dimensions"]["qa"]["accuracy"] == pytest.approx(200 / 3)


def test_refusing_or_unreachable_judge_stops_the_run(merged, judge, tmp_path, capsys):
    fixture, answers = merged["activitynet"]
    judge.statuses = [401]
    rc, _ = run_judge(fixture, answers, tmp_path, "--judge-base-url", judge.url, "--judge-model", "m")
    assert rc == 2 and "HTTP 401" in capsys.readouterr().err
    port = judge.server_address[1]
    judge.shutdown()
    judge.server_close()
    rc, _ = run_judge(fixture, answers, tmp_path, "--judge-base-url", f"http://127.0.0.1:{port}/v1",
                      "--judge-model", "m", "--judge-retries", "1")
    assert rc == 2 and "did not answer after 2 tries" in capsys.readouterr().err


def test_verdict_parsing():
    assert parse_verdict("{'pred': 'yes', 'score': 4.8}", True) == {"pred": "yes", "score": 4.8}
    assert parse_verdict('Here: {"score": "3"}', False) == {"score": 3.0}
    for bad in ("{'score': 7}", "{'pred': 'maybe', 'score': 2}", "score: 3", "{'score': True}"):
        with pytest.raises(InvalidVerdictError):
            parse_verdict(bad, "pred" in bad)
