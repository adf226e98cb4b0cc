"""A run directory on S3 (issue 7): the smoke farm is written to and attacked from s3:// on a real S3 API,
moto's server on loopback; credentials and endpoint come from the environment and never reach the run.

Endpoint: the standard AWS_ENDPOINT_URL environment variable, read by pyarrow's S3 client, so the run URI
stays a plain s3://bucket/path (pyarrow's `?endpoint_override=host:port&scheme=http` URI form works too:
tested below). The jobs run in a subprocess, as a user would run them, with their own local Ray
(RAY_ADDRESS=local) so that the trainer actors inherit the environment; they run in an empty working
directory, which must stay empty (nothing of the run lands on local disk).
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from farm.errors import RunError
from farm.lease import LeaseObject
from farm.lock import HOLDER, run_lock
from farm.plan import load_plan
from farm.shards import model_dir
from farm.storage import RunDir
from farm.verify import verify_plan

moto_server = pytest.importorskip("moto.server", reason="needs moto's server: pip install 'moto[server]'")
boto3 = pytest.importorskip("boto3", reason="needs boto3 (comes with moto)")

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "shadowfarm-test"
ATTACKS = ("gap", "augmentation", "calibrated")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3():
    """(endpoint URL, credentials env, boto3 client) of a fresh moto S3 server on 127.0.0.1 with BUCKET."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": "sfsecret" + secrets.token_hex(16),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a machine outside AWS
    }
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, credentials, client
    finally:
        server.stop()


def _objects(client, prefix: str) -> dict[str, bytes]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


@pytest.mark.system
def test_smoke_run_on_s3(s3, tmp_path, monkeypatch):
    endpoint, credentials, client = s3
    uri = f"s3://{BUCKET}/runs/smoke"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="sfs3-", dir="/tmp"))  # short: Ray's sockets live under it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(credentials, AWS_ENDPOINT_URL=endpoint, RAY_ADDRESS="local", RAY_TMPDIR=str(ray_tmp),
               PYTHONPATH=str(ROOT), RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU="1")
    command = [sys.executable, "-m", "jobs.attack", "--smoke-test", "--run", uri, "--quiet",
               "--attacks", ",".join(ATTACKS)]
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        ray_logs = b"".join(p.read_bytes() for p in ray_tmp.rglob("*") if p.is_file() and not p.is_symlink())
        assert b"raylet" in ray_logs  # the session's logs were there to search
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # Trained into S3 (8 models), then attacked from it; the report went there too.
    assert '"trained_now": 8' in done.stdout and f"report: {BUCKET}/runs/smoke/report/index.html" in done.stdout
    objects = _objects(client, "runs/smoke/")
    keys = {key.removeprefix("runs/smoke/") for key in objects}
    assert {"run.json", "membership.parquet", "queries.parquet", "report/index.html", "report/roc.png"} <= keys
    for m in range(8):
        assert {f"{model_dir(m)}/{name}" for name in ("weights.pt", "metrics.json", "responses.parquet",
                                                      "_SUCCESS")} <= keys
    for name in ATTACKS:
        assert {f"attacks/{name}/scores.parquet", f"attacks/{name}/metrics.json"} <= keys
    assert list(cwd.iterdir()) == []  # nothing of the run on local disk

    # Credentials: in no object of the run, not in the job's output, not in Ray's logs of the session.
    for secret in (credentials["AWS_SECRET_ACCESS_KEY"], credentials["AWS_ACCESS_KEY_ID"]):
        assert not [key for key, data in objects.items() if secret.encode() in data]
        assert secret not in done.stdout and secret not in done.stderr
        assert secret.encode() not in ray_logs

    # Another process (this one) reads and verifies the run through the same environment.
    for key, value in {**credentials, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    assert verify_plan(load_plan(uri)) == []


@pytest.mark.system
def test_endpoint_in_the_uri(s3, monkeypatch):
    """pyarrow's URI parameters name the endpoint without any environment variable for it."""
    endpoint, credentials, _ = s3
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    host = endpoint.removeprefix("http://")
    run = RunDir(f"s3://{BUCKET}/uri-form?endpoint_override={host}&scheme=http")
    run.write_json("run.json", {"ok": True})
    assert run.root == f"{BUCKET}/uri-form" and run.read_json("run.json") == {"ok": True}
    assert run.listdir() == ["run.json"]


@pytest.mark.system
def test_of_two_writers_on_one_expired_lease_exactly_one_takes_it(s3, monkeypatch):
    """S3's conditional writes (If-Match, If-None-Match) make the lease atomic: both writers read the expired
    lease, the first one's takeover succeeds, the second one's fails (`farm.lease`)."""
    endpoint, credentials, _ = s3
    for key, value in {**credentials, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    run = RunDir(f"s3://{BUCKET}/race")
    stale = {"host": "node-7", "pid": 4242, "started": 0, "command": "train", "token": "t", "expires": time.time() - 1}
    run.write_json(HOLDER, stale)
    first, second = LeaseObject(run, HOLDER), LeaseObject(run, HOLDER)
    assert first.client is not None  # conditional writes, not pyarrow's write-then-read-back
    (held, seen), (_, seen_too) = first.read(), second.read()
    assert held == stale and seen == seen_too is not None
    assert first.put({**stale, "token": "a"}, seen) is not None
    assert second.put({**stale, "token": "b"}, seen_too) is None  # If-Match: the first one wrote it since
    assert second.put({**stale, "token": "b"}, None) is None  # If-None-Match: a lease exists
    assert run.read_json(HOLDER)["token"] == "a"
    run.delete(HOLDER)
    run.write_json("run.json", {})
    with run_lock(run, command="attack"):
        assert run.read_json(HOLDER)["pid"] == os.getpid()
    assert not run.is_file(HOLDER)


@pytest.mark.parametrize("uri", ["s3://AKIAXXXX:SECRETXXXX@bucket/run", "s3://bucket/run?secret_key=SECRETXXXX",
                                 "gs://TOKENXXXX@bucket/run", "s3://bucket/run?session_token=SECRETXXXX"])
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(RunError, match="credentials in a run URI") as error:
        RunDir(uri)
    assert "XXXX" not in str(error.value)
