"""A private 3-node NATS cluster with JetStream on loopback, for R3 streams that can fail over.

Node *i* is ``nats-server -a 127.0.0.1 -p P_i -js -sd DIR_i -n NAME_i --cluster_name C
--cluster nats://127.0.0.1:R_i --routes ROUTES_i``. ``ROUTES_i`` are the other nodes'
route addresses, or -- with ``route_via`` -- whatever address node *i* is to use for node
*j*, so that a fault proxy can sit on every route. Then every node also advertises a route
address where nothing listens (``--cluster_advertise``, a port the cluster holds bound): a
server tries the routes it learns by gossip (implicit routes) once, and a direct implicit
route would otherwise carry a pair's traffic past the proxies -- seen: a node cut off its
proxied routes stayed in the meta group through one. The cluster serves once JetStream's
meta group has a leader (``$JS.API.INFO`` answers); a stream's leader is what the
JetStream API's stream info says (``cluster.leader``), and so is how far each of its
other replicas is behind (``cluster.replicas``: ``current`` and ``lag``, in entries).
"""
from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable

from baselines.servers.nodes import Node, PrivateCluster, require_binary, wait_for
from logqueue.local_cluster import free_ports

META_READY_S = 60.0


async def _ask(servers: list[str], call):
    import nats

    nc = await nats.connect(servers=[f"nats://{s}" for s in servers], connect_timeout=2, allow_reconnect=False,
                            max_reconnect_attempts=0)
    try:
        return await call(nc.jetstream(timeout=3))
    finally:
        await nc.close()


class NatsCluster(PrivateCluster):
    system = "nats-cluster"

    def __init__(self, run_dir, nodes: int = 3, route_via: Callable[[int, int, str], str] | None = None) -> None:
        """``route_via(i, j, address)``: the address node ``i`` dials for node ``j``'s route port ``address``."""
        super().__init__(run_dir, nodes)
        self.proxied = route_via is not None
        self.route_via = route_via or (lambda i, j, address: address)
        self._unroutable: socket.socket | None = None  # bound, never listening: connecting to it is refused

    def prepare(self) -> None:
        binary = require_binary(self.system, "nats-server", "nats-server")
        token = secrets.token_hex(3)
        ports = free_ports(2 * self.size)
        self.route_ports = {i: ports[2 * i - 1] for i in range(1, self.size + 1)}
        for i in range(1, self.size + 1):
            client = ports[2 * i - 2]
            data = self.run_dir / f"node-{i}"
            data.mkdir(parents=True, exist_ok=True)
            routes = ",".join(f"nats://{self.route_via(i, j, f'127.0.0.1:{self.route_ports[j]}')}"
                              for j in range(1, self.size + 1) if j != i)
            name = f"lq{token}-{i}"
            argv = [binary, "-a", "127.0.0.1", "-p", str(client), "-js", "-sd", str(data), "-n", name,
                    "--cluster_name", f"lq{token}", "--cluster", f"nats://127.0.0.1:{self.route_ports[i]}",
                    "--routes", routes]
            if self.proxied:
                argv += ["--cluster_advertise", self._unroutable_address()]
            self.nodes[name] = Node(name, client, argv, self.run_dir / f"node-{i}.log")

    def _unroutable_address(self) -> str:
        if self._unroutable is None:
            self._unroutable = socket.socket()
            self._unroutable.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % self._unroutable.getsockname()[1]

    def release(self) -> None:
        if self._unroutable is not None:
            self._unroutable.close()
            self._unroutable = None

    def ask(self, call, timeout_s: float = 10.0, exclude: str | None = None):
        """Run ``await call(jetstream_context)`` on a fresh connection to the live nodes (but ``exclude``)."""
        servers = [n.address for n in self.live_nodes() if n.name != exclude]
        return asyncio.run(asyncio.wait_for(_ask(servers, call), timeout_s))

    def _meta_ready(self) -> bool:
        try:
            self.ask(lambda js: js.account_info(), timeout_s=5.0)
            return True
        except Exception:  # no meta leader yet: JetStream answers 503 or times out
            return False

    def form(self) -> None:
        wait_for(self._meta_ready, META_READY_S, f"{self.system}: JetStream has no meta leader", poll_s=0.2)

    def settled(self) -> bool:
        """Every node answers JetStream's account info on a connection of its own: each is up and sees the
        meta leader, so a new R3 stream gets a replica on every node."""
        def answers(node) -> bool:
            try:
                asyncio.run(asyncio.wait_for(_ask([node.address], lambda js: js.account_info()), 5.0))
                return True
            except Exception:  # not up, or no meta leader in its view yet
                return False

        return super().settled() and all(answers(node) for node in self.nodes.values())

    def stream_cluster(self, queue: str, exclude: str | None = None):
        """The ``cluster`` part of stream ``queue``'s info, per the JetStream API, asked of the live nodes but
        ``exclude`` (one cut off would answer nothing); ``None`` when no stream leader answers (an election, no
        node up, no such stream)."""
        if not queue:
            raise ValueError("a NATS cluster has a leader per stream: name the stream")
        try:
            found = self.ask(lambda js: js.stream_info(queue), timeout_s=5.0, exclude=exclude)
        except Exception:  # no stream leader right now (election), no node answers, or no such stream
            return None
        return found.cluster

    def leader(self, queue: str | None = None) -> str | None:
        """The node that leads stream ``queue`` (see :meth:`stream_cluster`); ``None`` when none is named."""
        cluster = self.stream_cluster(queue) if queue is not None else None
        leader = cluster.leader if cluster is not None else None
        return leader if leader in self.nodes and self.nodes[leader].alive() else None

    def replica(self, queue: str, name: str,
                ask_others: bool = False) -> tuple[bool, int] | None:
        """``(current, lag in entries)`` of node ``name``'s replica of stream ``queue``, as the stream's
        leader reports it (the leader itself: ``(True, 0)``), asked of the other nodes only with
        ``ask_others``; ``None`` when no leader reports on it."""
        cluster = self.stream_cluster(queue, exclude=name if ask_others else None)
        if cluster is None:
            return None
        if cluster.leader == name:
            return True, 0
        peer = next((p for p in (cluster.replicas or []) if p.name == name), None)
        return None if peer is None else (bool(peer.current), peer.lag or 0)
