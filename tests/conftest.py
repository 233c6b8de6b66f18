"""Fixtures for every test folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The CI machine has two shared cores and the models here are tiny: more threads
    # only add contention. Session scope puts this in place before the session- and
    # module-scoped fixtures that build models and train heads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
