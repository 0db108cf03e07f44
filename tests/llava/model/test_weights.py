"""Safe checkpoint readers: JSON configs, tensor files, strict loading of pretrained parts."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from llava.model.weights import load_part_strictly, read_json, read_state_dict, read_tensor_file


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json holds a JSON list"):
        read_json(tmp_path / "list.json")


def test_tensor_files_load_safely(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "ok.bin")
    assert torch.equal(read_tensor_file(tmp_path / "ok.bin")["a"], torch.ones(2))
    torch.save(nn.Linear(2, 2), tmp_path / "module.bin")  # a pickled object, refused by weights_only
    with pytest.raises(ValueError, match="module.bin cannot be read as a tensor dict"):
        read_tensor_file(tmp_path / "module.bin")
    torch.save([torch.ones(1)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="list.bin holds a list"):
        read_tensor_file(tmp_path / "list.bin")


def test_load_part_strictly(tmp_path):
    source = nn.Linear(3, 2)
    save_file({f"part.{k}": v.contiguous() for k, v in source.state_dict().items()} | {"other.x": torch.zeros(1)},
              str(tmp_path / "model.safetensors"))
    assert sorted(read_state_dict(tmp_path, prefix="part.")) == ["bias", "weight"]
    target = nn.Linear(3, 2)
    load_part_strictly(target, tmp_path, "part.", "test part")
    assert torch.equal(target.weight, source.weight)
    with pytest.raises(ValueError, match=r"test part .*shape mismatch for \['weight \(2, 3\) vs \(2, 4\)"):
        load_part_strictly(nn.Linear(4, 2), tmp_path, "part.", "test part")
    with pytest.raises(KeyError, match="test part .*lacks 2 tensors"):
        load_part_strictly(nn.Linear(3, 2), tmp_path, "missing.", "test part")
