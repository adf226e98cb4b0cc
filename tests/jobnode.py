"""A Ray job whose driver runs on a worker node (for tests/test_multinode.py, which runs this file in a subprocess):
`python tests/jobnode.py OUT`.

A cluster of this process (`jobs.bench.cluster.local_cluster`: a head with no CPU and the Jobs API on a free
loopback port, two worker nodes of one CPU, the first one alone holding the custom resource `DRIVER_RESOURCE`);
then `ray job submit --entrypoint-resources '{"driver_node": 1}' -- python -m jobs.train ... --out OUT/run`, which
places the job's driver on that worker node (Ray runs the entrypoint where its resources are), with the run on a
local path every node sees (one machine: one file system). The nodes inherit this process's environment, the
venv's bin first on PATH, so the entrypoint's `python` is the venv's. Prints one JSON line: the job's status, the
node its driver ran on, the node holding the resource, the head, and the nodes that trained the models.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from multinode import CONFIG  # noqa: E402
from polling import wait_for  # noqa: E402
from test_cluster_head import free_ports  # noqa: E402

from jobs.bench.cluster import local_cluster  # noqa: E402

DRIVER_RESOURCE = "driver_node"
JOB_SECONDS = 300  # the job's bound: ray job submit waits for it to finish
JOB = "train-on-a-worker"


def _ready(client_class, url: str):
    """A Jobs API client once the head's dashboard answers, else None."""
    try:
        client = client_class(url)
        client.list_jobs()
        return client
    except (ConnectionError, RuntimeError, OSError):
        return None


def main(out: str) -> int:
    import ray
    from ray.job_submission import JobSubmissionClient

    venv_bin = str(Path(sys.executable).parent)  # not resolved: the venv's bin, not the base interpreter's
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    temp = tempfile.mkdtemp(prefix="sfjn")
    port, agent = free_ports(2)
    head = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
            "dashboard_agent_listen_port": agent}
    with local_cluster(2, temp, head_args=head, node_args=[{"resources": {DRIVER_RESOURCE: 1}}, {}]) as cluster:
        url = f"http://127.0.0.1:{port}"
        client = wait_for(lambda: _ready(JobSubmissionClient, url), "the Jobs API", limit=120)
        [holder] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and DRIVER_RESOURCE in n["Resources"]]
        command = [str(Path(venv_bin, "ray")), "job", "submit", "--address", url, "--submission-id", JOB,
                   "--entrypoint-resources", json.dumps({DRIVER_RESOURCE: 1}), "--", "python", "-m", "jobs.train",
                   "--config", "quickstart", *(f"--set={c}" for c in CONFIG), "--out", str(Path(out, "run")),
                   "--quiet"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=JOB_SECONDS,
                              stdin=subprocess.DEVNULL)
        info = client.get_job_info(JOB)
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        print(json.dumps({"status": str(info.status.value), "submit_rc": done.returncode,
                          "driver_node": info.driver_node_id, "holder": holder,
                          "head": cluster.head_node.node_id}))
    shutil.rmtree(temp, ignore_errors=True)  # the nodes' logs and sockets, once they are stopped
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
