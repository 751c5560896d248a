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
from baselines.servers.replicated import ReplicatedTopology, local_cluster, probe_binaries

ADDRESS_KEY = "redis-sentinel"
ROUTES_KEY = "redis-sentinel-routes"
SENTINEL_ENV = "LOGQUEUE_REDIS_SENTINEL"
ROUTES_ENV = "LOGQUEUE_REDIS_SENTINEL_ROUTES"
MASTER_ENV = "LOGQUEUE_REDIS_SENTINEL_MASTER"
DEFAULT_MASTER = "lq"
START_HINT = "python -m baselines.servers redis-sentinel DIR (it prints the variables to export)"


def client_env(cluster) -> dict[str, str]:
    """The environment that points this backend's clients at ``cluster`` (a started ``RedisSentinelCluster``)."""
    from baselines.servers.redis_sentinel import MASTER

    return {SENTINEL_ENV: ",".join(cluster.sentinel_addresses), MASTER_ENV: MASTER}


def parse_routes(spec: str) -> dict[str, str]:
    """``"a:1=b:2,c:3=d:4"`` -> ``{"a:1": "b:2", ...}``: where to dial a primary Sentinel names."""
    return dict(pair.split("=", 1) for pair in spec.split(",") if "=" in pair)


class RoutedSentinel(redis.sentinel.Sentinel):
    """Sentinel that maps the primary's address through ``routes`` (e.g. to this client's own proxy link)."""

    def __init__(self, sentinels, routes: dict[str, str], **kwargs) -> None:
        super().__init__(sentinels, **kwargs)
        self.routes = routes

    def discover_master(self, service_name):
        host, port = super().discover_master(service_name)
        host = host.decode() if isinstance(host, bytes) else host
        return split_address(self.routes.get(f"{host}:{port}", f"{host}:{port}"))


class RedisSentinelTopology(ReplicatedTopology):
    """Every connection to data node *j* goes through the run's hub: node *j* announces the link
    ``sentinels-><node-j>`` (so Sentinel hands that address out), whose connections from node *i*'s
    source address (its replication link) are the link ``node-<i>->node-<j>``. Failover keeps
    working through them: Sentinel's ``REPLICAOF`` names the new primary's announced address."""

    isolation = ("the node's client links, the Sentinels' links to it and every replication link to and from it "
                 "are blackholed (per-link proxies: each node announces a proxy and dials out from a loopback "
                 "address of its own)")
    lag_unit = "bytes of replication stream"

    def make_cluster(self, run_dir, route):
        from baselines.servers.redis_sentinel import RedisSentinelCluster, source_host

        self.ingress: dict[int, str] = {}
        size = 3

        def announce(j: int, address: str) -> str:
            self.ingress[j] = f"sentinels->node-{j}"
            self.links.add(self.ingress[j], address)
            for i in range(1, size + 1):
                if i != j:
                    self.routes[(i, j)] = f"node-{i}->node-{j}"
                    self.links.add_source(self.routes[(i, j)], self.ingress[j], source_host(i))
            return self.links.address(self.ingress[j])

        return RedisSentinelCluster(run_dir, nodes=size, announce=announce)

    def peer_links(self, node) -> list[str]:
        return super().peer_links(node) + [self.ingress[node]]

    def catching_up(self, node):
        """How many bytes of the primary's replication stream ``node`` lacks (as the primary last heard
        from it), and whether ``node`` itself reports having processed the stream up to the primary's
        offset of now (``slave_repl_offset``, its link to the primary up)."""
        primary = self.cluster.leader()
        if primary is None or primary == self.node_name(node):
            return super().catching_up(node)
        info = self.cluster.replication(primary)
        target = info.get("master_repl_offset", 0)
        host, _, port = self.cluster.announced_address(self.node_name(node)).rpartition(":")
        heard = next((v.get("offset") for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                      and str(v.get("ip")) == host and str(v.get("port")) == port), None)

        def caught_up() -> bool:
            own = self.cluster.replication(self.node_name(node))
            return own.get("master_link_status") == "up" and own.get("slave_repl_offset", -1) >= target

        return (None if heard is None else max(0, target - heard)), caught_up

    def servers(self) -> dict[str, str]:
        sentinels = {f"sentinel-{i}": a for i, a in enumerate(self.cluster.sentinel_addresses, 1)}
        return {**super().servers(), **sentinels}

    def _links(self, links: dict[str, str]) -> tuple[str, str]:
        sentinels = ",".join(links[f"sentinel-{i}"] for i in self.nodes)
        routes = ",".join(f"{self.cluster.announced_address(self.names[i - 1])}={links[f'node-{i}']}" for i in self.nodes)
        return sentinels, routes

    def client_env(self, links: dict[str, str]) -> dict[str, str]:
        sentinels, routes = self._links(links)
        return {**client_env(self.cluster), SENTINEL_ENV: sentinels, ROUTES_ENV: routes}

    def config_addresses(self, links: dict[str, str]) -> dict[str, str]:
        sentinels, routes = self._links(links)
        return {ADDRESS_KEY: sentinels, ROUTES_KEY: routes}


class RedisSentinelBackend(RedisStreamsBackend):
    name = "redis-sentinel"
    durability = ("XADD answered by the primary and WAIT 1: received (in memory) by at least one of 2 replicas; "
                  "AOF everysec; failover may still promote a replica without it")
    replicas = 3  # the primary and its 2 replicas
    replicas_to_wait = 1
    confirmed_on = 1 + replicas_to_wait  # the primary and the replica WAIT heard from

    @classmethod
    def topology(cls, private: bool = False, external=None) -> RedisSentinelTopology:
        """A private primary + 2 replicas + 3 Sentinels, one per ``experiments run``."""
        return RedisSentinelTopology()

    @classmethod
    def probe(cls, external=None) -> str | None:
        return probe_binaries(cls.name, [("redis-server", "redis-server", None)])

    @classmethod
    def local_servers(cls, fresh: bool = True):
        """A private primary, replicas and Sentinels for one command (see ``baselines.servers.replicated.local_cluster``)."""
        from baselines.servers.redis_sentinel import RedisSentinelCluster

        return local_cluster(RedisSentinelCluster, client_env, lambda c: {ADDRESS_KEY: ",".join(c.sentinel_addresses)},
                             SENTINEL_ENV, fresh)

    def _spec(self) -> str:
        return self.config.addresses.get(ADDRESS_KEY) or os.environ.get(SENTINEL_ENV, "")

    def client(self) -> redis.Redis:
        sentinels = [split_address(a.strip()) for a in self._spec().split(",") if a.strip()]
        if not sentinels:
            raise BackendUnavailable(f"{self.name}: no Sentinels given (set ${SENTINEL_ENV} to HOST:PORT,...); "
                                     f"start it with: {START_HINT}")
        timeouts = {"socket_connect_timeout": 2.0, "socket_timeout": _redis.BLOCK_S + 5.0}
        routes = parse_routes(self.config.addresses.get(ROUTES_KEY) or os.environ.get(ROUTES_ENV, ""))
        sentinel = RoutedSentinel(sentinels, routes, sentinel_kwargs=timeouts, **timeouts)
        return sentinel.master_for(os.environ.get(MASTER_ENV, DEFAULT_MASTER))

    def ping(self, r: redis.Redis) -> None:
        try:
            r.ping()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"{self.name}: no primary through the Sentinels at {self._spec()} "
                                     f"({' '.join(str(exc).split())}); start it with: {START_HINT}") from None

