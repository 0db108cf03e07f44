"""One torch thread for the B-VLLM tests: tiny modules gain nothing from threads, and on a shared machine
two spinning threads per process lose a lot."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
