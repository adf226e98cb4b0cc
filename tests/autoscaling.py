"""Ray's real autoscaler on this machine, from the project's own cluster.yaml (for tests/test_autoscaling.py, which
runs this file in a subprocess): `python tests/autoscaling.py OUT`.

The worker node types of cluster.yaml (`available_node_types` but the head) are scaled down to fit here (`scaled`:
1 CPU each, their GPUs as logical GPUs, at most one node of each, `min_workers: 0`) and handed to Ray's fake
multi-node provider (`fake_multinode`: the autoscaler launches and terminates raylets on this machine as it would
cloud instances). A head with no CPU and no GPU starts with them (`ray start --head --autoscaling-config`, its
own port, token and temp dir); the script then trains a farm that asks for GPUs (`farm.num_gpus=0.5`), which only
a node launched from zero can give, and prints one JSON line: the nodes before and after (resources), the models
trained and the node that trained each. Once the farm is done, it waits (bounded) until the
autoscaler has terminated every node it launched, idle for `IDLE_MINUTES`, and prints the autoscaler's removal
events too. (The fake provider's nodes all share this machine's IP; the provider option `use_node_id_as_ip` makes
the autoscaler track their idle time by node id (otherwise Ray's monitor keys their load by this machine's IP,
the provider names each node by its id, the two never match, and no node is ever seen idle).)
The head, and every process of the nodes it launched, is stopped before this process exits.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ["data.subsample=120", "membership.n_models=4", "train.epochs=2", "farm.group_size=2", "farm.num_gpus=0.5",
          "farm.num_cpus=0.5", "farm.num_actors=2", "model.hidden=[16]", "queries=[clean]"]
IDLE_MINUTES = 0.05  # cluster.yaml: 10
LIMIT_SECONDS = 300  # every wait below is bounded by this


def scaled(node_types: dict) -> dict:
    """cluster.yaml's worker node types, made to fit one small machine: 1 CPU, GPUs kept as logical ones, at most
    one node of a type, none at start."""
    out = {}
    for name, spec in node_types.items():
        if name == "head":
            continue
        resources = dict(spec["resources"])
        resources["CPU"] = 1
        out[name] = {"resources": resources, "node_config": {}, "min_workers": 0,
                     "max_workers": min(1, spec.get("max_workers", 1))}
    return out


def fake_config(cluster_file: Path, gcs_address: str) -> dict:
    """An autoscaling config for Ray's fake multi-node provider with `scaled` node types of `cluster_file`."""
    cluster = yaml.safe_load(cluster_file.read_text())
    types = scaled(cluster["available_node_types"])
    types["ray.head.default"] = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    return {"cluster_name": "fake", "max_workers": len(types), "upscaling_speed": cluster["upscaling_speed"],
            "idle_timeout_minutes": IDLE_MINUTES, "docker": {}, "auth": {"ssh_user": "ubuntu"},
            "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "launch_multiple": False,
                         "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": types, "head_node_type": "ray.head.default", "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
            "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _nodes(ray) -> dict:
    """{node id: {"alive", "resources"}} of the cluster's nodes, as the GCS reports them."""
    return {n["NodeID"]: {"alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()}


def _wait(condition, what: str):
    deadline = time.monotonic() + LIMIT_SECONDS
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {LIMIT_SECONDS} s waiting for {what}")
        time.sleep(0.5)
    return found


def _removals(temp: str) -> list[str]:
    """The autoscaler's 'Removing N nodes of type T (reason).' events, from the head's monitor log."""
    lines = []
    for log in sorted(Path(temp).glob("session_latest/logs/monitor*")):
        lines += [line.split(":event_summary:")[-1] for line in log.read_text(errors="replace").splitlines()
                  if "event_summary:Removing" in line]
    return lines


def _stop(head: subprocess.Popen, marks: tuple[str, ...]) -> None:
    """Terminate `ray start --block` (its session: the head's processes), then any process left whose command line
    names one of `marks` (the head's temp dir, its GCS address: the nodes the autoscaler launched)."""
    import signal

    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in marks):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start_head(temp: str, port: int, gcs: str) -> subprocess.Popen:
    config = Path(temp, "autoscaling.json")
    config.write_text(json.dumps(fake_config(ROOT / "cluster.yaml", gcs)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k.startswith("RAY_AUTH")}
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    command = ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
               f"--temp-dir={temp}", f"--autoscaling-config={config}", "--include-dashboard=false",
               "--disable-usage-stats"]
    log = open(Path(temp, "head.log"), "wb")  # noqa: SIM115 (the head writes it until it stops)
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def main(out: str) -> int:
    temp = tempfile.mkdtemp(prefix="sfas")
    token = Path(temp, "auth_token")  # this cluster's own token (Ray's token authentication), for head and driver
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))  # before Ray is imported: it reads them
    import ray
    import ray._private.services

    port = _port()
    gcs = f"{ray._private.services.get_node_ip_address()}:{port}"
    head = _start_head(temp, port, gcs)
    try:
        _wait(lambda: "Ray runtime started" in Path(temp, "head.log").read_text(errors="replace"), "the head")
        ray.init(address=gcs, configure_logging=False)
        from farm.config import load_config
        from farm.driver import train_farm
        from farm.plan import plan_run

        head_id = ray.get_runtime_context().get_node_id()
        before = _nodes(ray)
        plan = plan_run(load_config(None, CONFIG), str(Path(out, "run")))
        trained = train_farm(plan, progress=False)
        launched = {k: v for k, v in _nodes(ray).items() if k not in before}
        where = [plan.run.read_json(f"models/model_id={m:05d}/metrics.json")["node"]["node_id"] for m in trained]
        # the farm's actors are gone: after IDLE_MINUTES idle the autoscaler terminates every node it launched
        done = time.monotonic()
        _wait(lambda: not any(_nodes(ray).get(k, {}).get("alive") for k in launched), "the idle nodes' termination")
        idle = round(time.monotonic() - done, 1)  # reported, never asserted
        # the monitor logs its event summary at the end of its update, which can come after the node is gone
        removed = _wait(lambda: _removals(temp), "the autoscaler's removal event")
        print(json.dumps({"head": head_id, "before": before, "launched": launched, "trained": trained,
                          "trained_on": where, "after": _nodes(ray), "removed": removed,
                          "terminated_after_seconds": idle}))
        ray.shutdown()
    finally:
        _stop(head, (temp, gcs))
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
