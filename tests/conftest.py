import os
import shutil

import pytest
import torch  # before any test module loads scikit-learn: see below

os.environ.setdefault("RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU", "1")

# Import order matters: when scikit-learn's bundled OpenMP runtime is loaded before torch's, its
# HistGradientBoosting fits (confidence and white-box classifiers) with 2 threads run ~10x slower in this
# process (a 1 s test took 24 s after a module that imported `sklearn.linear_model` first). torch first,
# as the CLI and the jobs do, keeps them fast.


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray for the whole session (2 CPUs, no dashboard). address="local": always a new local
    Ray, never a cluster that a stale /tmp/ray/ray_current_cluster or RAY_ADDRESS points at."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False, _system_config={"num_workers_soft_limit": 6,
                                                      "idle_worker_killing_time_threshold_ms": 3_600_000})
    yield ray
    ray.shutdown()


class Farms:
    """Tiny farms trained once per session, cached by (config, overrides): the config name (None: the
    defaults) and the tuple of `--set` overrides. `run(...)` hands out a private copy of the trained run
    (tests write attack results, audits, tune trials into their run); `shared(...)` the one trained run
    itself, for a module that only reads it."""

    # the canonical farms: 120 digits, 8 MLPs of one hidden layer, a clean, a translate and 6 Gaussian queries
    LOGITS = ("data.subsample=120", "membership.n_models=8", "train.epochs=5", "farm.group_size=4",
              "model.hidden=[32]", "train.lr=0.01",
              "queries=[clean, {kind: translate, d: 1}, {kind: gaussian, sigma: 0.2, n: 6}]")
    LABELS = LOGITS + ("record_logits=false",)  # label-only: no logits recorded
    SMALL = ("data.subsample=120", "membership.n_models=8", "train.epochs=4", "farm.group_size=4",
             "model.hidden=[16]", "train.lr=0.01", "queries=[clean, {kind: gaussian, sigma: 0.2, n: 6}]")
    DISJOINT = ("data.subsample=200", "membership.mode=disjoint", "membership.n_models=10", "membership.p_in=0.3",
                "train.epochs=30", "farm.group_size=4", "model.hidden=[64]", "train.lr=0.01",
                "queries=[clean, {kind: translate, d: 1}, {kind: gaussian, sigma: 0.2, n: 6}]")
    # 8 MLPs that fit their 60 training images: a crafted query's bias shows on models that learned something
    OVERFIT = ("data.subsample=120", "membership.n_models=8", "train.epochs=40", "farm.group_size=4",
               "model.hidden=[64]", "train.lr=0.01", "queries=[clean]")

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.trained: dict[tuple, str] = {}

    def shared(self, *overrides: str, config: str | None = None) -> str:
        """The session's run of this config: trained on first use. Read it, never write into it."""
        key = (config, tuple(overrides))
        if key not in self.trained:
            from farm.config import load_config
            from farm.driver import train_farm
            from farm.plan import plan_run
            from jobs.common import resolve_config

            out = str(self.tmp.mktemp("farm") / "run")
            cfg = load_config(None if config is None else resolve_config(config), overrides)
            train_farm(plan_run(cfg, out), progress=False)
            self.trained[key] = out
        return self.trained[key]

    def run(self, *overrides: str, config: str | None = None) -> str:
        """A copy of the session's run of this config, the caller's own to write into."""
        out = str(self.tmp.mktemp("run") / "run")
        shutil.copytree(self.shared(*overrides, config=config), out)
        return out

    @staticmethod
    def crafting_group(run: str, models: list[int], n: int) -> tuple:
        """(stacked (base, params, buffers), the models as modules, x, y, member bool[G, n]) of `models` of `run` on
        its first n examples: what the crafting kernels (`attacks.compute.crafting`) take."""
        from attacks.compute.whitebox import stacked
        from farm.models import build_model
        from farm.plan import load_plan
        from farm.shards import load_weights

        plan = load_plan(run)
        data, states = plan.dataset, [load_weights(plan.run, m) for m in models]
        modules = []
        for state in states:
            modules.append(build_model(plan.cfg.model, info=data.info))
            modules[-1].load_state_dict(state)
        return (stacked(plan.cfg.model, data.info, states), modules, torch.tensor(data.x[:n]),
                torch.tensor(data.y[:n].astype("int64")), torch.tensor(plan.member[models, :n]))

    def smoke(self) -> str:
        """A copy of the smoke farm (`jobs.smoke`, what every job's --smoke-test trains if needed): a job's smoke
        test given it as --run resumes it instead of training it again."""
        from jobs.smoke import SMOKE_CONFIG, SMOKE_OVERRIDES

        return self.run(*SMOKE_OVERRIDES, config=SMOKE_CONFIG)


@pytest.fixture(scope="session")
def farms(ray_local, tmp_path_factory) -> Farms:
    """The session's farm factory (`Farms`): `farms.run(*farms.LOGITS)` is a trained tiny run of one's own."""
    return Farms(tmp_path_factory)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module of many small batched ops (memguard): on a busy 2-core
    machine a second thread only adds waiting. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
