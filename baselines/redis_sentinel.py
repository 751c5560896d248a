"""``redis-sentinel``: ``redis-streams`` on a Redis primary with two replicas, found through three Sentinels.

Everything ``baselines.redis_streams`` says holds (one consumer group, XAUTOCLAIM after
``timeout_s``, the owner-checking settle scripts). The client is redis-py's
``Sentinel(...).master_for``: every new connection asks the Sentinels for the current
primary, and a connection that finds its server gone, or demoted to a read-only replica,
is dropped and the next command goes to whoever Sentinel names now -- so clients follow
a failover. The servers run with ``appendonly yes`` / ``appendfsync everysec`` and
``min-replicas-to-write 1`` (see ``baselines.servers.redis_sentinel``).

What a confirm promises: ``enqueue`` returns after ``XADD`` was answered by the primary
**and** ``WAIT 1`` reported that at least one replica has received it (within
``WAIT_MS`` = 2 s; otherwise ``enqueue`` raises and the producer retries, which may add the
job twice). Received, not persisted: the replica holds the write in memory and appends
it to its AOF within a second (``everysec``), as the primary does. Redis replication is
asynchronous and Sentinel promotes the replica with the highest replication offset
without asking whether it had every acknowledged write, so a confirmed job survives the
crash of the primary when the promoted replica is one that had it -- usually, not
always (the Redis docs: WAIT "does not make Redis a strongly consistent store").
Acks and nacks do not wait: a lost ack means a redelivery (at-least-once), never a loss.

The Sentinels: ``BackendConfig.addresses["redis-sentinel"]`` or ``$LOGQUEUE_REDIS_SENTINEL``,
comma-separated ``HOST:PORT``; the master's name is ``$LOGQUEUE_REDIS_SENTINEL_MASTER``
(default ``lq``).
"""
from __future__ import annotations

import os

import redis
import redis.sentinel

from baselines import _redis
from baselines.base import BackendUnavailable, split_address
from baselines.redis_streams import RedisStreamsBackend

ADDRESS_KEY = "redis-sentinel"
SENTINEL_ENV = "LOGQUEUE_REDIS_SENTINEL"
MASTER_ENV = "LOGQUEUE_REDIS_SENTINEL_MASTER"
DEFAULT_MASTER = "lq"
START_HINT = "python -m baselines.servers redis-sentinel DIR (it prints the variables to export)"


def client_env(cluster) -> dict[str, str]:
    """The environment that points this backend's clients at ``cluster`` (a started ``RedisSentinelCluster``)."""
    from baselines.servers.redis_sentinel import MASTER

    return {SENTINEL_ENV: ",".join(cluster.sentinel_addresses), MASTER_ENV: MASTER}


class RedisSentinelBackend(RedisStreamsBackend):
    name = "redis-sentinel"
    replicas_to_wait = 1

    def _spec(self) -> str:
        return self.config.addresses.get(ADDRESS_KEY) or os.environ.get(SENTINEL_ENV, "")

    def client(self) -> redis.Redis:
        sentinels = [split_address(a.strip()) for a in self._spec().split(",") if a.strip()]
        if not sentinels:
            raise BackendUnavailable(f"{self.name}: no Sentinels given (set ${SENTINEL_ENV} to HOST:PORT,...); "
                                     f"start it with: {START_HINT}")
        timeouts = {"socket_connect_timeout": 2.0, "socket_timeout": _redis.BLOCK_S + 5.0}
        sentinel = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=timeouts, **timeouts)
        return sentinel.master_for(os.environ.get(MASTER_ENV, DEFAULT_MASTER))

    def ping(self, r: redis.Redis) -> None:
        try:
            r.ping()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"{self.name}: no primary through the Sentinels at {self._spec()} "
                                     f"({' '.join(str(exc).split())}); start it with: {START_HINT}") from None

