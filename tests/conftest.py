"""Shared test setup: GPU tests are skipped without CUDA; every test runs on small CPU tensors otherwise."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI machine has 2 cores; oversubscription makes small CPU tests slower, not faster.
    torch.set_num_threads(2)
    yield
