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


@pytest.fixture
def one_thread():
    # one thread for tests of small models on a shared two-core machine (two per process slow them several-fold);
    # a test module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
