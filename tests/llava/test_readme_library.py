"""The README's "Using the library" block runs as printed, on the files it makes itself."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def library_example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- library-example -->\n```python\n(.*?)```\n<!-- /library-example -->", text, re.S)
    assert found, "README.md lost its library example block"
    return found[1]


def test_the_library_example_runs_as_printed(tiny_dir, tmp_path, monkeypatch, capsys):
    from llava.toy.tiny import PARTS, _DIRNAMES

    playground = tmp_path / "playground" / "tiny"
    playground.mkdir(parents=True)
    for part in PARTS:  # the session's tiny models, so the block's make_all finds them complete
        (playground / _DIRNAMES[part]).symlink_to(tiny_dir / _DIRNAMES[part], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(library_example(), str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("torch.Size([8, 3, 56, 56]) '"), printed
    assert (playground / "moving_square.mp4").stat().st_size > 0
