"""The learning-curve benchmark's scorer reads the letter where the model predicts it, in the
expanded sequence (visual tokens spliced in before the text shift every position)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from benchmarks.demo_stage3_curves import held_out_turns, letter_accuracy

LETTER_IDS = [10, 11, 12, 13, 14]  # A..E
VISUAL = 6  # tokens the splice adds in front of the text


class FakeModel:
    """Logits over the expanded sequence that name ``answers[i]`` where item ``i``'s letter is predicted."""

    def __init__(self, answers: list[int]):
        self.answers, self.calls, self.training = answers, 0, True

    def eval(self):
        self.training = False

    def train(self):
        self.training = True

    def __call__(self, labels_len: torch.Tensor, first: torch.Tensor, letter_at: torch.Tensor):
        assert not self.training
        rows = len(first)
        logits = torch.zeros(rows, labels_len[0].item() + VISUAL, 20)
        for row in range(rows):
            answer = self.answers[first[row].item()]
            logits[row, letter_at[row].item() - 1 + VISUAL, LETTER_IDS[answer]] = 5.0
            # the same letter one position off (the unexpanded index) says something else
            logits[row, letter_at[row].item() - 1, LETTER_IDS[(answer + 1) % 5]] = 9.0
        return SimpleNamespace(logits=logits)


def collate(items):
    labels = torch.full((len(items), 12), -100)
    letter_at = []
    for row, item in enumerate(items):
        at = 4 + item["offset"]
        labels[row, at - 1], labels[row, at], labels[row, at + 1] = 1, LETTER_IDS[item["letter"]], 2  # "(", X, ")"
        letter_at.append(at)
    return {"labels": labels, "labels_len": torch.tensor([12] * len(items)),
            "first": torch.tensor([item["index"] for item in items]), "letter_at": torch.tensor(letter_at),
            "data_events": []}


def test_letter_accuracy_reads_expanded_positions():
    truth = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]
    items = [{"index": i, "letter": letter, "offset": i % 3} for i, letter in enumerate(truth)]
    answers = list(truth)
    answers[3] = 0  # two wrong answers of 18
    answers[17] = 4
    model = FakeModel(answers)
    assert letter_accuracy(model, collate, items, LETTER_IDS, batch=4) == 100 * 16 / 18
    assert model.training  # handed back in training mode


def test_held_out_turns_are_the_eval_set_in_training_format(tmp_path):
    import json

    from llava.toy.synthetic import EVAL_TASK_FILE, EVAL_VIDEO_DIR

    (tmp_path / "eval" / "json").mkdir(parents=True)
    items = [{"video": "v0.mp4", "question": "What color is the centre of the red tile?",
              "candidates": ["red", "green", "blue", "yellow", "purple"], "answer": "blue"}]
    (tmp_path / "eval" / "json" / EVAL_TASK_FILE).write_text(json.dumps(items))
    (turn,) = held_out_turns(tmp_path)
    assert turn["video"] == f"eval/video/{EVAL_VIDEO_DIR}/v0.mp4"
    human, gpt = (t["value"] for t in turn["conversations"])
    assert human.startswith("<video>\n") and "centre of the red tile" in human and "(C) blue" in human
    assert gpt == "(C) blue"
