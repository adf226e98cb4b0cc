import os

import pytest
import torch  # before any test module loads scikit-learn: see below

os.environ.setdefault("RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU", "1")

# Import order matters: when scikit-learn's bundled OpenMP runtime is loaded before torch's, its
# HistGradientBoosting fits (confidence and white-box classifiers) with 2 threads run ~10x slower in this
# process (a 1 s test took 24 s after a module that imported `sklearn.linear_model` first). torch first,
# as the CLI and the jobs do, keeps them fast.


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray for the whole session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module of many small batched ops (memguard): on a busy 2-core
    machine a second thread only adds waiting. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
