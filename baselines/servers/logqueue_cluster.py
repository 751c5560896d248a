"""logqueue's servers for a run: a local 3-node cluster, every node-to-node link through a proxy.

Node *i* listens on its own port; its ``--peers`` name, for each other node *j*, the proxy
link ``node-i->node-j`` in the run's hub. So the runner can cut the leader off its
followers (both directions), lag a follower, and -- with the clients' own links
(``w1->node-2``, ...) -- cut any client off any node. A node-to-node link admits only peer
connections: a client redirected to a leader address it learned from a follower (a
node-to-node link) is reset and falls back to its own links, so a client partition cannot
be bypassed.

Nodes run as ``python -m logqueue node`` processes with their data under
``RUN_DIR/nodes/node-<i>``; :meth:`ClusterTopology.spawn` starts a node again on the same
data, which is what a crash-restart is. :func:`local_cluster` is the plain cluster (no
proxies, fsync batch) that the bench and the smoke test run on.
"""
from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
import time
from pathlib import Path

import msgpack

from baselines.servers.topology import ServerStartError, Topology
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


def cluster_answers(addresses: str) -> bool:
    """True when some node at ``addresses`` answers."""
    from logqueue.client import Client

    try:
        with Client(addresses, timeout=2.0, attempt_timeout=1.0) as client:
            return any(row["role"] != "unreachable" for row in client.cluster_status())
    except ValueError:
        return False


@contextlib.contextmanager
def local_cluster(nodes: int = NODES, timeout_s: float = 30.0):
    """Start ``nodes`` logqueue nodes (fsync batch) in a temporary directory; yields "h:p,h:p,...".

    Every node is stopped (SIGTERM, then SIGKILL) and the directory removed on exit.
    Raises ``ServerStartError`` when no leader is elected within ``timeout_s``.
    """
    from logqueue.client import ClientError

    with LocalCluster(nodes, prefix="logqueue-local-", own_session=True, fsync="batch", log_level="warning") as cluster:
        try:
            cluster.wait_leader(timeout_s)
        except ClientError as exc:
            raise ServerStartError(f"logqueue: the local {nodes}-node cluster found no leader ({exc})") from None
        yield cluster.spec


class ClusterTopology(Topology):
    """Three local nodes behind proxies; the servers a client links to are ``node-1..3``."""

    everything = "cluster"

    def __init__(self, nodes: int = NODES) -> None:
        super().__init__(node_faults=None)
        self.node_faults = None
        self.ids = list(range(1, nodes + 1))
        self.nodes = list(self.ids)
        self.cluster: LocalCluster | None = None
        self.listen: dict[int, str] = {}
        self.run_dir: Path | None = None
        self._client = None  # a logqueue.client.Client on the real addresses, for status

    @property
    def hub(self):
        """The run's proxy hub, which holds the node-to-node links."""
        return self.links

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, run_dir: Path, links=None) -> None:
        """Start the nodes behind ``links`` (``ready`` waits for their leader)."""
        if links is None:
            raise ValueError("a ClusterTopology needs the run's proxy hub for its node-to-node links")
        super().start(run_dir, links)
        self.run_dir = run_dir
        data = run_dir / "nodes"
        shutil.rmtree(data, ignore_errors=True)
        ports = free_ports(len(self.ids))
        self.listen = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports)}
        for i in self.ids:
            for j in self.ids:
                if i != j:
                    links.add(self.node_link(i, j), self.listen[j], admit=peers_only)
        peers = {i: ",".join(f"{j}={self.listen[j] if j == i else links.address(self.node_link(i, j))}"
                             for j in self.ids)
                 for i in self.ids}
        self.cluster = LocalCluster(len(self.ids), data, ports=ports, peers=peers, logs=run_dir, own_session=True,
                                    log_level="warning").start_all()

    def ready(self, timeout_s: float = 60.0) -> None:
        """Return once every node of the run's answers and one of them leads; ``ServerStartError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.status()
            if set(self.nodes) <= {v["id"] for v in views} and any(v.get("role") == "leader" for v in views):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(f"logqueue: no leader with every node answering within {timeout_s:g} s")
            time.sleep(0.05)

    @property
    def procs(self) -> dict[int, subprocess.Popen]:
        """The node processes by id (empty before ``start``)."""
        return self.cluster.procs if self.cluster is not None else {}

    def process(self, node: int) -> subprocess.Popen:
        return self.procs[node]

    def spawn(self, node: int) -> int:
        """Start node ``node`` (again) on its data directory; returns its PID."""
        assert self.cluster is not None
        return self.cluster.start(node)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self.cluster is not None:
            self.cluster.stop(grace_s=0)  # SIGKILL every node at once
            self.cluster = None

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

    def timeline_addresses(self) -> dict[int, str]:
        return dict(self.listen)

    # --- state --------------------------------------------------------------------------

    def _up(self, i: int) -> bool:
        return self.procs.get(i) is not None and self.procs[i].poll() is None

    def status(self) -> list[dict]:
        """Every node's own view (``role``, ``term``, ``commit_index``, ...), unreachable ones left out."""
        from logqueue.client import Client

        if self._client is None:
            self._client = Client(list(self.listen.values()), timeout=1.0)
        out = []
        for i in self.ids:
            if not self._up(i):
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

    def catching_up(self, node: int):
        """How far ``node`` is behind the highest commit index now, and whether it has applied that since."""
        views = {s["id"]: s for s in self.status()}
        target = max((s.get("commit_index", 0) for s in views.values()), default=0)
        behind = max(0, target - views.get(node, {}).get("last_index", 0))

        def caught_up() -> bool:
            return {s["id"]: s for s in self.status()}.get(node, {}).get("applied_index", 0) >= target

        return behind, caught_up

    # --- faults -------------------------------------------------------------------------

    def peer_links(self, node: int) -> list[str]:
        """Every node-to-node link into or out of ``node``."""
        return [self.node_link(a, b) for a in self.ids for b in self.ids if a != b and node in (a, b)]


class ExternalClusterTopology(ClusterTopology):
    """A logqueue cluster this runner did not start (e.g. docker-compose's three nodes).

    Clients still reach each node through their own proxy links, so client-side faults
    work; the nodes themselves cannot be killed or cut off from each other.
    """

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(nodes=len(addresses))
        self.listen = {i: address for i, address in zip(self.ids, addresses)}
        self.nodes = []
        self.node_faults = (f"the logqueue nodes at {','.join(addresses)} are not this runner's processes: it cannot "
                            "kill them or cut them off each other (run without --logqueue-cluster for a local cluster)")

    def start(self, run_dir: Path, links=None) -> None:
        Topology.start(self, run_dir, links)
        self.run_dir = run_dir

    def _up(self, i: int) -> bool:
        return True

    def timeline_addresses(self) -> dict[int, str]:
        return {}
