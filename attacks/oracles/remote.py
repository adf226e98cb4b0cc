"""The oracle of a remote target URL: `HttpOracle` (http(s)://, protocols shadowfarm and v2) or `GrpcOracle`
(grpc(s)://, protocol v2-grpc; attacks.oracles.grpc_client)."""

from __future__ import annotations

from attacks.oracles.http_client import HttpOracle
from attacks.oracles.http_settings import HttpSettings
from farm.errors import ConfigError

__all__ = ["REMOTE", "HttpSettings", "remote_oracle"]

REMOTE = ("http://", "https://", "grpc://", "grpcs://")


def remote_oracle(target: str, settings: HttpSettings, **kwargs):
    """The oracle of a remote target: a `GrpcOracle` for grpc(s):// (protocol v2-grpc), else an `HttpOracle`, made
    with `settings` and `kwargs`; ConfigError when the URL's scheme and the protocol disagree."""
    over_grpc = target.startswith(("grpc://", "grpcs://"))
    if over_grpc != (settings.protocol == "v2-grpc"):
        raise ConfigError(f"--target {target}: " + ("a grpc:// target needs --protocol v2-grpc" if over_grpc else
                                                    "--protocol v2-grpc needs --target grpc://HOST:PORT[/v2/models/NAME]"))
    if over_grpc:
        from attacks.oracles.grpc_client import GrpcOracle  # grpcio: loaded only for a gRPC target

        return GrpcOracle(target, settings=settings, **kwargs)
    return HttpOracle(target, settings=settings, **kwargs)
