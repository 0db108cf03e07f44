"""The suite's clean-up of DeepSpeed's leaked shared-memory buffers removes only what it made."""

from tests.helpers.shared_memory import deepspeed_buffers, remove_buffers_made_since


def test_only_the_buffers_made_since_are_removed(tmp_path):
    old = tmp_path / "deepspeed_allreduce_buffer_0_127.0.0.1_29500_0"
    other = tmp_path / "sem.mp-abc"
    old.write_bytes(b"x")
    other.write_bytes(b"x")
    before = deepspeed_buffers(tmp_path)
    assert before == {old}
    made = [tmp_path / f"deepspeed_allreduce_buffer_0_127.0.0.1_29611_{rank}" for rank in (0, 1)]
    for path in made:
        path.write_bytes(b"x")
    assert remove_buffers_made_since(before, tmp_path) == made
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old.name, other.name])
