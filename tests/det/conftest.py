import pytest
import torch

from r1.evaluate import get_evaluator

# `get_evaluator` imports every evaluator module only while none is registered; importing
# r1.evaluate.detection directly (as these tests do) first would hide the other families'.
get_evaluator("det")


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machine has 2 cores shared with other jobs; keep each test on one.
    torch.set_num_threads(1)
    torch.manual_seed(0)
