import os

import pytest

os.environ.setdefault("RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU", "1")


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray for the whole session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
