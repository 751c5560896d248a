"""A private Redis primary with two replicas and three Sentinels on loopback.

Data nodes ``redis-1`` (the first primary), ``redis-2``, ``redis-3`` run from config
files under the run directory with ``appendonly yes``, ``appendfsync everysec`` and no
RDB snapshots, and ``min-replicas-to-write 1`` (a primary that has lost every replica
for 10 s refuses writes, which bounds what a cut-off primary accepts) -- how an
experienced user runs Redis for a work queue behind Sentinel; replicas start
with ``replicaof`` the first primary. Each node announces ``announce(i, address)`` as
its address (default its own), so a fault proxy can sit in front of every node, and
dials out -- its replication link to the primary -- from a loopback address of its own,
``source_host(i)`` (``bind-source-addr``), so that proxy can tell which replica's
link a connection is.
Sentinels ``sentinel-1..3`` (``redis-server CONF --sentinel``) monitor the master
``MASTER`` with quorum 2; failover rewrites the nodes' config files (``CONFIG
REWRITE``), so a node restarted after a failover keeps the role Sentinel gave it.

The leader is the primary Sentinel names (``SENTINEL get-master-addr-by-name``), asked
of the live Sentinels: the answer of a majority of those that answer.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis

from baselines.servers.nodes import Node, PrivateCluster, require_binary, wait_for
from logqueue.local_cluster import free_ports

MASTER = "lq"


def source_host(i: int) -> str:
    """The loopback address data node ``i``'s outgoing connections come from."""
    return f"127.0.0.{10 + i}"


class RedisSentinelCluster(PrivateCluster):
    system = "redis-sentinel"

    def __init__(self, run_dir, nodes: int = 3, down_after_ms: int = 2000, failover_timeout_ms: int = 10000,
                 announce: Callable[[int, str], str] | None = None) -> None:
        super().__init__(run_dir, nodes)
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.announce = announce or (lambda i, address: address)
        self.sentinels: dict[str, Node] = {}

    def prepare(self) -> None:
        binary = require_binary(self.system, "redis-server", "redis-server")
        ports = free_ports(2 * self.size)
        self.sentinels = {}
        data_ports, sentinel_ports = ports[:self.size], ports[self.size:]
        self.announced: dict[str, str] = {}
        first = None
        for i, port in enumerate(data_ports, 1):
            name, data = f"redis-{i}", self.run_dir / f"redis-{i}"
            data.mkdir(parents=True, exist_ok=True)
            ann_host, _, ann_port = self.announce(i, f"127.0.0.1:{port}").rpartition(":")
            self.announced[f"{ann_host}:{ann_port}"] = name
            lines = [f"port {port}", "bind 127.0.0.1", f"dir {data}", "appendonly yes", "appendfsync everysec",
                     'save ""', "min-replicas-to-write 1", "min-replicas-max-lag 10", f"bind-source-addr {source_host(i)}",
                     # Listening on 127.0.0.1 only; protected mode would refuse the replicas' 127.0.0.1x sources.
                     "protected-mode no",
                     f"replica-announce-ip {ann_host}", f"replica-announce-port {ann_port}"]
            if first is None:
                first = (ann_host, ann_port)
            else:
                lines.append(f"replicaof {first[0]} {first[1]}")
            conf = data / "redis.conf"
            conf.write_text("\n".join(lines) + "\n")
            self.nodes[name] = Node(name, port, [binary, str(conf)], self.run_dir / f"{name}.log")
        for i, port in enumerate(sentinel_ports, 1):
            name, data = f"sentinel-{i}", self.run_dir / f"sentinel-{i}"
            data.mkdir(parents=True, exist_ok=True)
            conf = data / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {data}",
                f"sentinel monitor {MASTER} {first[0]} {first[1]} 2",
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER} 1",
            ]) + "\n")
            self.sentinels[name] = Node(name, port, [binary, str(conf), "--sentinel"], self.run_dir / f"{name}.log")

    def form(self) -> None:
        """Start the Sentinels (processes of the cluster too: watched and stopped with the nodes)."""
        for s in self.sentinels.values():
            self.spawn(s)
        for s in self.sentinels.values():
            self.await_node(s)
        wait_for(self._replicas_linked, 60.0, f"{self.system}: the replicas were not all online (synced) with the primary")
        wait_for(self._sentinels_agree, 60.0, f"{self.system}: the Sentinels did not all see each other and the replicas")

    def _info(self, port: int, section: str) -> dict:
        try:
            with redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1) as r:
                return r.info(section)
        except redis.RedisError:
            return {}

    def settled(self) -> bool:
        """Every node up, the Sentinels' primary has every other node online as its replica, and every
        Sentinel sees the others and the replicas (as after ``form``, whichever node is primary now)."""
        primary = self.leader()
        return (super().settled() and primary is not None and self._replicas_linked(primary)
                and self._sentinels_agree())

    def _replicas_linked(self, primary: str = "redis-1") -> bool:
        info = self._info(self.nodes[primary].port, "replication")
        online = [k for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]
        return len(online) == self.size - 1

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels.values():
            try:
                with redis.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=1) as r:
                    m = r.sentinel_master(MASTER)
            except redis.RedisError:
                return False
            if m.get("num-other-sentinels") != len(self.sentinels) - 1 or m.get("num-slaves") != self.size - 1:
                return False
        return True

    def processes(self) -> list[Node]:
        return [*self.nodes.values(), *self.sentinels.values()]

    def announced_address(self, name: str) -> str:
        """The address data node ``name`` announces (the one Sentinel hands out)."""
        return next(address for address, node in self.announced.items() if node == name)

    def replication(self, name: str) -> dict:
        """Data node ``name``'s ``INFO replication`` (empty when it does not answer)."""
        return self._info(self.nodes[name].port, "replication")

    @property
    def sentinel_addresses(self) -> list[str]:
        return [s.address for s in self.sentinels.values()]

    def leader(self, queue: str | None = None) -> str | None:
        """The data node the live Sentinels' majority names as the primary (``queue`` is not used)."""
        answers = []
        for s in self.sentinels.values():
            if not (s.alive() and not s.paused):
                continue
            try:
                with redis.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=1) as r:
                    host, port = r.sentinel_get_master_addr_by_name(MASTER)
            except (redis.RedisError, TypeError):
                continue
            answers.append(self.announced.get(f"{host.decode() if isinstance(host, bytes) else host}:{port}"))
        if not answers:
            return None
        name, votes = Counter(answers).most_common(1)[0]
        if name is None or votes * 2 <= len(answers) or not self.nodes[name].alive():
            return None
        return name
