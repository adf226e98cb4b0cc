"""The stdlib engine's HTTP side (`attacks.oracles.server.LabelServer`): one thread per connection reading a
request within its deadlines and handing it to the server's `LabelApi`.

A request's line and headers must arrive within `header_seconds` of its first byte and its body within
`body_seconds` plus a second per MiB, else 408 and the connection is closed (`_Deadline`: a client trickling
bytes, a slowloris, holds a thread no longer); an idle connection is closed after `idle_seconds`. A POST is
refused from its headers before any byte of its body is read (`LabelApi.before_body`: token, path,
Content-Length).
"""

from __future__ import annotations

import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attacks.oracles.label_api import Reply, content_length_of

DRAIN_BYTES = 64 << 20  # an over-limit body up to this size is read and dropped, so its client reads the 413
REFUSED_DRAIN = 64 << 10  # of a request refused for its token, path or Content-Length: at most this much is read


class LabelHTTPServer(ThreadingHTTPServer):
    # socketserver's default accept queue is 5 connections: under a burst of concurrent clients (an audit opens
    # `concurrency` connections per client) the kernel then resets connections instead of queueing them.
    request_queue_size = socket.SOMAXCONN
    label_server = None  # the LabelServer it serves (its api, counts, model and deadlines)


class _Deadline:
    """A request that is not read whole within `seconds` gets a 408 and its connection is shut (a client that trickles
    its headers or body, a slowloris, holds a thread no longer). `done()` stops it; False when it already fired."""

    def __init__(self, connection: socket.socket, seconds: float):
        self.connection, self.finished, self.lock = connection, False, threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def done(self) -> bool:
        with self.lock:
            self.timer.cancel()
            expired, self.finished = self.finished, True
            return not expired

    def _expire(self) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
            reply = Reply.error(408, "request not received in time")
            head = "".join(f"{k}: {v}\r\n" for k, v in {**reply.headers, "Connection": "close"}.items())
            try:
                self.connection.sendall(f"HTTP/1.1 408 Request Timeout\r\n{head}\r\n".encode() + reply.body)
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client has gone already


class LabelHandler(BaseHTTPRequestHandler):
    """One connection of a LabelHTTPServer: its requests, read within their deadlines, answered by its api."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        self.label = self.server.label_server
        self.timeout = self.label.idle_seconds  # per read: an idle connection is closed (set on the socket)
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # requests are not logged: an Authorization header must never reach a log

    def handle_one_request(self):
        try:
            self.rfile.peek(1)  # wait, up to the idle timeout, for a request to begin
        except OSError:  # TimeoutError included: an idle keep-alive connection is closed without a word
            self.close_connection = True
            return
        self.deadline = _Deadline(self.connection, self.label.header_seconds)  # its request line and headers
        try:
            super().handle_one_request()
        finally:
            self.deadline.done()

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _refuse(self, reply: Reply, length: int) -> None:
        """Send `reply` and close. Closing on unread bytes resets the connection and the client could lose the
        answer, so body bytes are read and dropped first: for a 413 (a body over the limit from a client that
        may send it) up to DRAIN_BYTES within the body deadline; for the others only those already arrived."""
        self.close_connection = True
        try:
            if reply.status == 413:
                if self._read_body(min(length, DRAIN_BYTES)) is None:
                    return  # the 408 went out instead
            else:
                drain = min(length, REFUSED_DRAIN)
                while drain > 0 and select.select([self.connection], [], [], 0)[0]:
                    if not (chunk := self.connection.recv(min(drain, 1 << 16))):
                        break
                    drain -= len(chunk)
            self._send(reply)
        except OSError:
            pass  # the client has gone

    def _read_body(self, length: int) -> bytes | None:
        """The body, read within `body_seconds` plus a second per MiB; None after the 408 (or a dropped client)."""
        deadline = _Deadline(self.connection, self.label.body_seconds + length / (1 << 20))
        try:
            body = self.rfile.read(length) if length > 0 else b""
        except OSError:
            body = None
        if not deadline.done() or body is None or len(body) < length:
            self.close_connection = True
            return None  # (chunked bodies are not read: a request without Content-Length has none)
        return body

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.deadline.done():
            self._send(self.label.api.get(self.path, self.headers.get("Authorization"), self.label.stats))

    def do_POST(self):  # noqa: N802
        if not self.deadline.done():
            return
        header = self.headers.get("Content-Length")
        refused = self.label.api.before_body(self.path, self.headers.get("Authorization"), header)
        if refused is not None:  # no body read without a valid token; a 413 drains, so its client reads it
            return self._refuse(refused, content_length_of(header) or 0)
        body = self._read_body(content_length_of(header))
        if body is None:
            return
        headers = self.headers
        inputs = self.label.api.parse(self.path, headers.get("Authorization"), headers.get("Content-Type"), body)
        if isinstance(inputs, Reply):
            return self._send(inputs)
        try:
            labels = self.label.answer(inputs.x)
        except RuntimeError as exc:  # the model failed: the client may retry a 5xx
            return self._send(self.label.api.model_failed(exc))
        self._send(self.label.api.reply(inputs, labels))
        if self.label.on_answer is not None:
            self.label.on_answer(self.label.requests_answered)

