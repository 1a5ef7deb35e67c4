"""Fixtures shared by the core tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: intra-op threads gain nothing there, and on a busy
    two-core machine their spin-waits can cost far more than the work (a GAN latent inversion
    ran 100× slower with two). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
