"""What the two Redis adapters share: the client, the one-line connect error, key clean-up."""
from __future__ import annotations

import re

import redis

from baselines.base import BackendConfig, split_address, unavailable
from baselines.servers import REDIS

# Longest a blocking command waits in one call, so a cut-off connection is noticed.
BLOCK_S = 1.0


def client(config: BackendConfig) -> redis.Redis:
    """A client for the configured Redis address (through the fault proxy when one is set).

    The socket timeout is longer than any blocking call we make, so a timeout means the
    connection is dead (e.g. blackholed), not that a queue was empty.
    """
    host, port = split_address(config.addresses["redis"])
    return redis.Redis(host=host, port=port, socket_connect_timeout=2.0, socket_timeout=BLOCK_S + 5.0)


def ping(backend_name: str, config: BackendConfig, r: redis.Redis) -> None:
    """Raise ``BackendUnavailable`` (one line) when Redis does not answer."""
    try:
        r.ping()
    except redis.RedisError as exc:
        raise unavailable(backend_name, REDIS, config.addresses["redis"], exc) from None


def delete_prefix(r: redis.Redis, prefix: str) -> None:
    """Delete every key that starts with ``prefix``."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    keys = list(r.scan_iter(match=pattern, count=500))
    if keys:
        r.delete(*keys)
