import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    torch.set_num_threads(1)  # the machine's cores are shared
    torch.manual_seed(0)
