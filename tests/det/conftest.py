import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machine has 2 cores; keep each test on one.
    torch.set_num_threads(1)
    torch.manual_seed(0)
