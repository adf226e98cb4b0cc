"""The settings of an `HttpOracle`, the check of its URL, and the errors it raises (attacks.oracles.http_client)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
from dataclasses import dataclass

from farm.errors import ConfigError, ShadowfarmError

PROTOCOLS = ("shadowfarm", "v2", "v2-grpc")


class Retryable(Exception):
    """A failure worth retrying: 5xx, connection refused/reset, timeout (gRPC: unavailable, deadline, ...)."""


class TargetError(ShadowfarmError):
    """The audited target refused a request, answered malformed labels, or did not answer in time."""


class TargetChanged(TargetError):
    """Journaled answers re-asked differ: the model behind the URL is not the one that answered the journal."""


@dataclass(frozen=True)
class HttpSettings:
    """How an `HttpOracle` talks to its target (seconds for times; rate in requests per second, None: no limit)."""

    batch_size: int = 1024
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    rate: float | None = None
    encoding: str = "binary"  # or "json" (protocol "shadowfarm" only; v2 is JSON)
    protocol: str = "shadowfarm"  # or "v2" (REST), "v2-grpc" (attacks.oracles.grpc_client)
    output_name: str | None = None  # v2: the output to read (default: the first)
    input_name: str | None = None  # v2: the input to send (default: the first declared, else "input-0")

    def __post_init__(self):
        for name, low in (("batch_size", 1), ("concurrency", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
        if not self.timeout > 0 or not self.backoff >= 0 or (self.rate is not None and not self.rate > 0):
            raise ConfigError(f"timeout > 0, backoff >= 0 and rate > 0 expected, got {self.timeout!r}, "
                              f"{self.backoff!r}, {self.rate!r}")
        if self.encoding not in ("binary", "json"):
            raise ConfigError(f"encoding: expected binary or json, got {self.encoding!r}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected {', '.join(PROTOCOLS)}, got {self.protocol!r}")


def check_target_url(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """`url` if it is a URL of one of `schemes` (http(s) by default) without credentials; ConfigError otherwise
    (not echoing secrets)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"--target: expected {schemes[0]}://HOST:PORT/PATH, got {url!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if "@" in parts.netloc or any(k.lower() in ("token", "key", "api_key", "password", "secret") for k, _ in query):
        raise ConfigError(f"--target {parts.scheme}://{parts.hostname}{parts.path}: credentials in the URL would be "
                          "written into the run; give a bearer token with --token-env VARIABLE")
    return url


def server_message(exc: urllib.error.HTTPError) -> str:
    """The `error` of a v2/serve error body, as ': message' (at most 200 characters); empty when none."""
    try:
        message = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError, OSError):
        return ""
    return f": {' '.join(str(message).split())[:200]}"
