"""A local 3-node logqueue cluster for one run, with every node-to-node link through a proxy.

Node *i* listens on its own port; its ``--peers`` name, for each other node *j*, the proxy
link ``node-i->node-j``. So the runner can cut the leader off its followers (both
directions), lag a follower, and -- with the clients' own links (``w1->node-2``, ...) --
cut any client off any node. A node-to-node link admits only peer connections: a client
redirected to a leader address it learned from a follower (a node-to-node link) is reset
and falls back to its own links, so a client partition cannot be bypassed.

Nodes run as ``python -m logqueue node`` processes with their data under
``RUN_DIR/nodes/node-<i>``; :meth:`ClusterTopology.restart` starts a node again on the
same data, which is what a crash-restart is.
"""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
import struct
import subprocess
import time
from pathlib import Path

import msgpack

from experiments.clusterlog import CLUSTER_FILE, ClusterLog
from experiments.faults import process as procfaults
from experiments.faults.proxy import ProxyHub
from experiments.scenarios.base import RunContext, Topology
from logqueue.local_cluster import LocalCluster, free_ports

NODES = 3
CLUSTER_ENV = "LOGQUEUE_CLUSTER"
_HEADER = struct.Struct(">IB")  # logqueue's frame header: body length, protocol version
_AUTH = 2  # logqueue's AUTH frame type: [AUTH, kind, peer_id, listen, mac]


def peers_only(head: bytes) -> bool | None:
    """``admit`` filter for node-to-node links: only a connection whose AUTH says ``peer``."""
    if len(head) < _HEADER.size:
        return None
    length, _ = _HEADER.unpack_from(head)
    if len(head) < _HEADER.size + length:
        return None
    try:
        body = msgpack.unpackb(head[_HEADER.size:_HEADER.size + length], raw=False)
    except (ValueError, msgpack.UnpackException):
        return False
    return isinstance(body, list) and len(body) > 1 and body[0] == _AUTH and body[1] == "peer"


def probe_cluster(addresses: str | None = None) -> str | None:
    """``None`` when logqueue can be used (a local cluster, or the running nodes at ``addresses``), else why not."""
    if importlib.util.find_spec("baselines.logqueue") is None:
        return "logqueue: the logqueue backend (baselines.logqueue) is not available yet"
    try:
        from logqueue.client import Client
        from logqueue.runtime import serve  # noqa: F401
    except ImportError as exc:
        return f"logqueue: the node runtime cannot be imported ({exc})"
    if addresses:
        try:
            with Client(addresses, timeout=5.0) as client:
                client.status()  # the leader's view: waits for an election
        except Exception as exc:
            return (f"logqueue: no leader at {addresses} ({' '.join(str(exc).split())}); "
                    "start the nodes (docker-compose up logqueue-1 logqueue-2 logqueue-3)")
    return None


class ClusterTopology(Topology):
    """Three local nodes behind proxies; the servers a client links to are ``node-1..3``."""

    def __init__(self, nodes: int = NODES) -> None:
        self.ids = list(range(1, nodes + 1))
        self.hub: ProxyHub | None = None
        self.nodes: LocalCluster | None = None
        self.listen: dict[int, str] = {}
        self.run_dir: Path | None = None
        self._client = None  # a logqueue.client.Client on the real addresses, for status
        self._cluster_log: ClusterLog | None = None  # RUN_DIR/cluster.jsonl, for raft-timeline.ipynb

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, run_dir: Path) -> None:
        """Start the nodes and wait for a leader (raises ``RuntimeError`` after 15 s)."""
        self.run_dir = run_dir
        data = run_dir / "nodes"
        shutil.rmtree(data, ignore_errors=True)
        self.hub = ProxyHub()
        ports = free_ports(len(self.ids))
        self.listen = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports)}
        for i in self.ids:
            for j in self.ids:
                if i != j:
                    self.hub.add(self.node_link(i, j), self.listen[j], admit=peers_only)
        peers = {i: ",".join(f"{j}={self.listen[j] if j == i else self.hub.address(self.node_link(i, j))}"
                             for j in self.ids)
                 for i in self.ids}
        self.nodes = LocalCluster(len(self.ids), data, ports=ports, peers=peers, logs=run_dir, own_session=True,
                                  log_level="warning").start_all()
        self._cluster_log = ClusterLog(run_dir / CLUSTER_FILE, self.listen).start()
        self.wait_leader(15.0)

    @property
    def procs(self) -> dict[int, subprocess.Popen]:
        """The node processes by id (empty before ``start``)."""
        return self.nodes.procs if self.nodes is not None else {}

    def spawn(self, i: int) -> int:
        """Start node ``i`` (again) on its data directory; returns its PID."""
        assert self.nodes is not None
        return self.nodes.start(i)

    def close(self) -> None:
        if self._cluster_log is not None:
            self._cluster_log.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        if self.nodes is not None:
            self.nodes.stop(grace_s=0)  # SIGKILL every node at once
        if self.hub is not None:
            self.hub.close()

    # --- what clients see ---------------------------------------------------------------

    @staticmethod
    def node_link(i: int, j: int) -> str:
        return f"node-{i}->node-{j}"

    def servers(self) -> dict[str, str]:
        return {f"node-{i}": self.listen[i] for i in self.ids}

    def client_env(self, links: dict[str, str]) -> dict[str, str]:
        return {CLUSTER_ENV: ",".join(links[f"node-{i}"] for i in self.ids)}

    def config_addresses(self, links: dict[str, str]) -> dict[str, str]:
        return {"logqueue": ",".join(links[f"node-{i}"] for i in self.ids)}

    # --- state --------------------------------------------------------------------------

    def status(self) -> list[dict]:
        """Every node's own view (``role``, ``term``, ``commit_index``, ...), unreachable ones left out."""
        from logqueue.client import Client

        if self._client is None:
            self._client = Client(list(self.listen.values()), timeout=1.0)
        out = []
        for i in self.ids:
            if self.procs.get(i) is None or self.procs[i].poll() is not None:
                continue
            try:
                out.append({**self._client.status(self.listen[i]), "id": i})
            except Exception:  # a node that does not answer is simply not in the view
                continue
        return out

    def leader(self) -> int | None:
        """The id of the leader with the highest term, if any node says it leads."""
        leaders = [s for s in self.status() if s.get("role") == "leader"]
        return max(leaders, key=lambda s: s.get("term", 0))["id"] if leaders else None

    def wait_leader(self, timeout_s: float, exclude: int | None = None) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != exclude:
                return leader
            time.sleep(0.05)
        raise RuntimeError(f"no logqueue leader{'' if exclude is None else f' other than node {exclude}'} "
                           f"within {timeout_s:g} s")

    # --- faults -------------------------------------------------------------------------

    def node_links_of(self, i: int) -> list[str]:
        """Every node-to-node link into or out of node ``i``."""
        return [self.node_link(a, b) for a in self.ids for b in self.ids if a != b and i in (a, b)]

    def cut_node(self, ctx: RunContext, i: int) -> list[str]:
        """Links to blackhole to cut node ``i`` off its peers and every client."""
        return self.node_links_of(i) + ctx.link_names(servers=[f"node-{i}"])

    def isolate_leader(self, ctx: RunContext) -> tuple[str, list[str]]:
        """(target name, links) cutting the current leader off everyone; used by broker-partition."""
        leader = self.wait_leader(10.0)
        return f"node-{leader}", self.cut_node(ctx, leader)

    def set_links(self, ctx: RunContext, links: list[str], mode: str) -> None:
        # The node-to-node links live in this topology's hub, the client links in the run's.
        assert self.hub is not None
        mine = set(self.hub.names())
        self.hub.set_many([n for n in links if n in mine], mode)
        ctx.hub.set_many([n for n in links if n not in mine], mode)

    def kill(self, i: int) -> None:
        with contextlib.suppress(procfaults.ProcessFaultError):
            procfaults.kill(self.procs[i].pid)
        self.procs[i].wait()


class ExternalClusterTopology(ClusterTopology):
    """A logqueue cluster this runner did not start (e.g. docker-compose's three nodes).

    Clients still reach each node through their own proxy links, so client-side faults
    work; the nodes themselves cannot be killed or cut off from each other.
    """

    NODE_FAULTS = ("leader-crash", "follower-lag", "rolling-restart", "broker-restart")

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(nodes=len(addresses))
        self.listen = {i: address for i, address in zip(self.ids, addresses)}

    def start(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.wait_leader(15.0)

    def status(self) -> list[dict]:
        from logqueue.client import Client

        if self._client is None:
            self._client = Client(list(self.listen.values()), timeout=1.0)
        out = []
        for i in self.ids:
            try:
                out.append({**self._client.status(self.listen[i]), "id": i})
            except Exception:  # a node that does not answer is simply not in the view
                continue
        return out

    def set_links(self, ctx: RunContext, links: list[str], mode: str) -> None:
        ctx.hub.set_many(links, mode)

    def isolate_leader(self, ctx: RunContext) -> tuple[str, list[str]]:
        # Without the node-to-node links, cutting "the broker" means cutting every client off every node.
        return "cluster", ctx.link_names()

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
