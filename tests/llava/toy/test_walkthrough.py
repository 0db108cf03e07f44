"""The walkthrough (``make walkthrough``) runs end to end on the tiny checkpoints, with any registered projector."""

import json

import pytest

from llava.toy.walkthrough import main

# what `make walkthrough` passes
HICOM_PAPER = ["--projector", "hicom", "--projector-config", '{"hicom_preset": "paper"}']


def test_walkthrough_runs_end_to_end(tmp_path):
    results = main(["--out", str(tmp_path / "walk"), "--tiny", str(tmp_path / "tiny"), "--max-new-tokens", "3",
                    *HICOM_PAPER])
    assert results["frames"] == 8
    assert results["video_tokens"] == 8 * 3 * 3  # 7x7 SigLIP grid, 2x2 average pooling per frame
    assert results["image_tokens"] == 49
    [hicom] = results["projectors"]
    assert hicom["name"] == "hicom" and hicom["config"] == {"hicom_preset": "paper"}
    assert hicom["video_tokens"] == 2 * 3 * 3 + 32  # (4,3,3) groups + 32 global
    assert hicom["tokens_32_frames_so400m"] == 680 and hicom["tokens_image_so400m"] == 113
    assert json.loads((tmp_path / "walk" / "results.json").read_text()) == results
    assert (tmp_path / "walk" / "moving_square.mp4").stat().st_size > 0


def test_unknown_projector_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "walk"), "--tiny", str(tmp_path / "tiny"), "--projector", "no_such_projector"])
    assert info.value.code == 2
    message = capsys.readouterr().err
    assert "--projector no_such_projector: not registered" in message
    assert "mlp_gelu" in message and "hicom" in message  # the registered names, plugins included
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("argv, message", [
    (["--projector-config", "{}"], "must follow the --projector"),
    (["--projector", "linear", "--projector-config", "{oops"], "not valid JSON"),
    (["--projector", "linear", "--projector-config", "[1]"], "must be a JSON object"),
    (["--projector", "linear", "--projector-config", "{}", "--projector-config", "{}"], "configured twice"),
])
def test_projector_config_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
