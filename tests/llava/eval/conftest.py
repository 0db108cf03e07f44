"""A tiny HICom checkpoint (paper preset) shared by the evaluation tests, and one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread, as the inference subprocesses get (OMP_NUM_THREADS=1): tiny models gain nothing from
    threads (with other work on the machine they lose), and in- and out-of-process runs compute identically."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_hicom(tiny_dir: Path, tmp_path_factory) -> Path:
    """Folder of a tiny ``llava_qwen`` model with the HICom projector (random weights, seed 0)."""
    from llava.model.builder import assemble_llava_qwen

    out = tmp_path_factory.mktemp("eval") / "tiny-hicom"
    return assemble_llava_qwen(tiny_dir / "qwen2-tiny", tiny_dir / "siglip-tiny", out, mm_projector_type="hicom",
                               hicom_preset="paper")


@pytest.fixture(scope="session")
def tiny_hicom_loaded(tiny_hicom):
    """``tiny_hicom`` loaded once on the CPU, for tests that run inference in-process."""
    from types import SimpleNamespace

    from llava.eval.video_infer import load_model

    return load_model(SimpleNamespace(model_path=str(tiny_hicom), model_base=None, device="cpu", torch_dtype=None,
                                      attn_implementation=None))
