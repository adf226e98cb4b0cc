"""Running on a cluster (issue 7): cluster.yaml passes the autoscaler's own validation (offline), and a run
directory a Ray job could lose is refused. The smoke jobs through `ray job submit` against a real head are in
tests/test_cluster_head.py.
"""

import copy
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from farm.cluster import check_run_location
from farm.config import load_config
from farm.errors import RunError
from farm.plan import plan_run

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILES = ("cluster.yaml", "cluster-gcp.yaml")


# ---------------------------------------------------------------- cluster.yaml


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_yaml_passes_the_autoscalers_validation(name):
    """`ray up` runs prepare_config then validate_config (ray.autoscaler._private.commands._bootstrap_config)
    before any cloud call; the same two functions, offline, on our files."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_load(name))
    validate_config(prepared)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    gpu_types = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) >= 1}
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    assert gpu_types and all(v["min_workers"] == 0 and v["max_workers"] >= 1 for v in gpu_types.values())
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    docker = prepared["docker"]
    images = {docker["head_image"], docker["worker_image"]}
    assert images == {f"rayproject/ray:{ray.__version__}-{python}", f"rayproject/ray:{ray.__version__}-{python}-gpu"}
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "~/shadowfarm" in setup
    assert prepared["file_mounts"]["~/shadowfarm"] == "."


def test_the_validation_is_live():
    """The validator does reject a broken cluster file (so the test above can fail)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(_load("cluster.yaml"))
    broken["docker"]["imagee"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(_load("cluster.yaml"))
    broken["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


def test_a_relative_run_directory_is_refused_inside_a_ray_job(monkeypatch, tmp_path):
    """Inside `ray job submit` a relative --out would land in the job's temporary working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job's driver
    with pytest.raises(RunError, match="relative run directory inside a Ray job"):
        plan_run(load_config(None, ["data.subsample=50"]), "runs/x")
    for fine in ("/abs/path/run", "s3://bucket/run", "gs://bucket/run", "file:///abs/run"):
        check_run_location(fine)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    check_run_location("runs/x")  # outside a job: a local run, as always
    assert list(tmp_path.iterdir()) == []


def test_a_smoke_test_inside_a_ray_job_defaults_to_a_directory_the_job_may_use(monkeypatch, tmp_path, capsys):
    """`ray job submit -- python -m jobs.train --smoke-test` (no --out): an absolute directory, not the refused
    relative runs/<name>-smoke."""
    from jobs.common import smoke_out

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert smoke_out("quickstart-smoke") == "runs/quickstart-smoke"  # outside a job: as always
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    out = smoke_out("quickstart-smoke")
    assert out == str(tmp_path / "shadowfarm-smoke" / "quickstart-smoke")
    check_run_location(out)  # not refused
    assert out in capsys.readouterr().err  # the user is told where it went
