"""qfail.machine: the settings every chapter's numbers depend on."""
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from qfail import machine


def test_configure_caps_torch_and_the_blas_and_openmp_pools():
    import sklearn.linear_model  # noqa: F401 - loads scikit-learn's OpenMP runtime too

    np.ones((64, 64)) @ np.ones((64, 64))  # OpenBLAS is loaded
    with threadpool_limits(limits=2):  # as a process starts on two cores; the session's limits come back after
        facts = machine.configure(1)
        assert torch.get_num_threads() == 1 and facts["torch threads"] == "1"
        pools = threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools), pools
