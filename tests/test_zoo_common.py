"""Shared by the zoo tests (imported; holds no tests of its own)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches and networks: OpenMP threads only add spin-waiting (very slow on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
