"""Issue 30: the stdlib engine refuses from the headers before it reads a body, and answers every malformed request
(a Content-Length that is no number, a slowloris, a trickled body) with a status instead of a dropped connection.
The malformed bodies of the same issue are cases of the bounded hostile load (tests/test_serve_load.py)."""

import json
import socket

import pytest
import torch

from attacks.oracles.model import ModelOracle
from attacks.oracles.server import LabelServer
from tests.test_serve_load import MAX_BATCH, SHAPE, TOKEN


@pytest.fixture
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4)).eval()


def _raw(server, request: bytes) -> tuple[int, dict]:
    """(status, JSON body) of one raw HTTP exchange; a dropped connection fails (every request gets an answer)."""
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    return int(head.split()[1]), json.loads(body)


def test_stdlib_refuses_before_it_reads_and_answers_every_malformed_request(model):
    """Issue 30: the token before the body, a Content-Length that is no number, a slowloris and a trickled body."""
    oracle = ModelOracle(model, input_shape=SHAPE)
    open_server = LabelServer(oracle, max_batch=MAX_BATCH).start()
    guarded = LabelServer(oracle, token=TOKEN, max_batch=MAX_BATCH, header_seconds=0.2, body_seconds=0.2).start()
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
    try:
        assert _raw(open_server, post + b"Content-Length: abc\r\n\r\n") == (
            400, {"error": "Content-Length: expected a number of bytes, got 'abc'"})
        assert _raw(guarded, post + b"Content-Length: abc\r\n\r\n")[0] == 401
        # 128 MiB announced, none sent: refused at once from the headers (the body is never waited for)
        assert _raw(guarded, post + b"Content-Length: 134217728\r\n\r\n")[0] == 401
        assert _raw(guarded, post + b"X-Slow: 1\r\n") == (408, {"error": "request not received in time"})
        trickled = post + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n".encode() + b'{"inp'
        assert _raw(guarded, trickled)[0] == 408
        assert guarded.stats()["requests_answered"] == open_server.stats()["requests_answered"] == 0
    finally:
        open_server.stop()
        guarded.stop()
